"""Families as timm knows them, and what is drawn from a family's space.

* `register_family` (each family module calls it on import): the family becomes known to
  `get_family`, and each published variant a timm model ``nas_<family>_<variant>``;
* `random_choice`: a uniformly drawn point of a space;
* `searchable_families`: the families a ``--family`` value stands for.

The interface itself (`Family`, `OpNode`) and the lookup (`get_family`, `family_names`) are
`supernets.family`, which `supernets.config` checks configs through; they are re-exported here.
"""
from __future__ import annotations

import contextlib
import random
import sys
from typing import Any, Callable

import torch
import torch.nn as nn

import search_spaces
from supernets import family as _family
from supernets.config import IDENTITY, ArchConfig, Choice, SearchSpace
# the interface and the lookup, for the family modules and every caller that knows them from here
from supernets.family import Family, OpNode, family_names, first_width, get_family, no_family_rules  # noqa: F401


def register_family(family: Family) -> Family:
    """Register a family, and each of its published variants with timm as
    ``nas_<family>_<variant>`` (built from ``search_spaces/<family>/variants/<variant>.yaml``),
    with a pretrained cfg of its own (timm reads it from the family module's ``default_cfgs``)."""
    from timm.models import generate_default_cfgs, register_model

    _family.FAMILIES[family.name] = family
    configs = {f"nas_{family.name}_{v}": ArchConfig.load(search_spaces.variant_path(family.name, v))
               for v in family.variants}
    module = sys.modules[family.build.__module__]
    module.default_cfgs = generate_default_cfgs({name: _pretrained_cfg(family, cfg) for name, cfg in configs.items()})
    for name, config in configs.items():
        register_model(_timm_entrypoint(family, name, config))
    return family


def _pretrained_cfg(family: Family, config: ArchConfig) -> dict[str, Any]:
    """timm's pretrained cfg of a variant: its native input, ImageNet normalisation, the names of
    its first conv and classifier(s). No weights: nas downloads nothing."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    res = config.resolution
    classifier = tuple(c for c in family.timm_cfg["classifier"]
                       if "head_dist" not in c or config.head.get("distillation", False))
    return {"url": "", "num_classes": config.num_classes, "input_size": (3, res, res),
            "pool_size": (res // 32, res // 32), "crop_pct": 0.9, "interpolation": "bicubic",
            "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD, "fixed_input_size": False,
            **family.timm_cfg, "classifier": classifier[0] if len(classifier) == 1 else classifier}


def _timm_entrypoint(family: Family, name: str, config: ArchConfig) -> Callable[..., nn.Module]:
    """``timm.create_model(name, **kwargs)``: timm's builder (pretrained cfg, ``features_only``
    through ``forward_intermediates``) around the family's model."""
    from timm.models import build_model_with_cfg

    def build(num_classes: int | None = None, in_chans: int = 3, img_size: int | tuple[int, int] | None = None,
              global_pool: str = "avg", drop_path_rate: float = 0.0, device=None, dtype=None) -> nn.Module:
        from supernets.layers import set_drop_path

        if img_size is not None and not isinstance(img_size, int):
            if len(set(img_size)) != 1:
                raise ValueError(f"img_size {tuple(img_size)}: nas models take square inputs")
            img_size = img_size[0]
        cfg = config if num_classes is None else config.replace(num_classes=num_classes)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = family.build(cfg, img_size=img_size, in_chans=in_chans, global_pool=global_pool)
        return set_drop_path(model.to(dtype=dtype) if dtype is not None else model, drop_path_rate)

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError("nas ships no pretrained weights (no network at run time)")
        out_indices = kwargs.pop("out_indices", tuple(range(len(config.stages))))
        return build_model_with_cfg(build, name, pretrained, feature_cfg={"feature_cls": "getter",
                                                                          "out_indices": out_indices}, **kwargs)

    entrypoint.__name__ = name
    entrypoint.__module__ = family.build.__module__
    return entrypoint


def searchable_families(name: str = "all") -> list[str]:
    """The families a ``--family`` value stands for: 'all' is every registered family with a
    searchable space (a family may ship its published variants first); a name is itself, checked
    (an unknown one raises `ConfigError` listing the known)."""
    if name == "all":
        return [f for f in family_names() if search_spaces.space_path(f).is_file()]
    get_family(name)
    return [name]


def random_choice(space: SearchSpace, rng: random.Random) -> Choice:
    """A uniformly drawn point of the space: per stage a width, a depth, block kinds with the
    family's token blocks after its map blocks (the one reshape per stage every family allows)
    and a value of each elastic stage knob."""
    token_kinds = set(get_family(space.family).token_kinds)
    widths, kinds = [], []
    for j, stage in enumerate(space.stages):
        widths.append(rng.choice(space.widths(j)))
        depth = rng.randint(stage.min_blocks, stage.slots)
        maps = [k for k in stage.choices if k != IDENTITY and k not in token_kinds]
        tokens = [k for k in stage.choices if k in token_kinds]
        n_tokens = rng.randint(0 if maps else depth, depth) if tokens else 0
        row = [rng.choice(maps) for _ in range(depth - n_tokens)] + [rng.choice(tokens) for _ in range(n_tokens)]
        kinds.append(tuple(row) + (IDENTITY,) * (stage.slots - depth))
    knobs = tuple(tuple(sorted((k, rng.choice(v)) for k, v in stage.knobs.items())) for stage in space.stages)
    return Choice(tuple(widths), tuple(kinds), knobs)
