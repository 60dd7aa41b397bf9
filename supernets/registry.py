"""The small interface every family module exposes, and the registry of families.

`lut` and the generic `Supernet` know a family only through this interface:

* ``build(config, img_size, make_block)`` – the concrete model; ``make_block`` lets the supernet
  put a MetaPath in every slot while the rest of the network (stem, downsamples, head) is the
  very same code as the published variants.
* ``make_block(spec, dim, grid)`` – one block of a stage.
* ``op_nodes(config)`` – the network as an ordered list of ops (LUT key, input shape, factory).
* ``validate(config)`` / ``validate_space(space)`` – family rules, errors naming the field.
* ``stem_width(widths)`` – how the stem width follows the stage widths (default: the first).

A family is one module ``supernets/<family>.py`` and its YAMLs in ``search_spaces/<family>/``
(``space.yaml``, ``small.yaml``, ``variants/``); the folder is what makes it known. The module
declares its `Family` with every field named (a missing or misspelled one is a ``TypeError`` at
import) and registers it: ``FAMILY = register_family(Family(name=..., build=..., ...))``. The
rules every family shares (block kinds, block knobs, family knobs, a space's choices) are checked
once, in ``supernets.config``, from the fields declared here; ``validate`` / ``validate_space``
hold only a family's own rules.

Every family model has ``model.stages[j].blocks`` (a ModuleList of the stage's blocks); the
supernet relies on that name to map a subnet's blocks to the slots they inherit from.
"""
from __future__ import annotations

import contextlib
import importlib
import random
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

import search_spaces
from supernets.config import IDENTITY, ArchConfig, BlockSpec, Choice, ConfigError, SearchSpace, short


@dataclass(frozen=True)
class OpNode:
    """One op of a network for latency lookup: measured standalone, in deploy form."""

    name: str                      # e.g. "stages.2.blocks.3"
    key: str                       # LUT signature: kind + channels + spatial size + knobs
    kind: str
    in_shape: tuple[int, ...]      # batch-1 input shape of the standalone module
    make: Callable[[], nn.Module] = field(compare=False, repr=False)


def first_width(widths: Sequence[int]) -> int:
    return widths[0]


def no_family_rules(space: SearchSpace) -> None:
    """A family whose spaces need no rule beyond the shared ones."""


@dataclass(frozen=True)
class Family:
    name: str
    block_kinds: tuple[str, ...]
    build: Callable[..., nn.Module]
    make_block: Callable[[BlockSpec, int, tuple[int, int]], nn.Module]
    op_nodes: Callable[[ArchConfig], list[OpNode]]
    validate: Callable[[ArchConfig], None]            # the family's own rules (the shared ones: config.py)
    validate_space: Callable[[SearchSpace], None] = no_family_rules
    # knobs a block may carry (``{kind: mb4d, mlp_ratio: 4}``); the stage's knobs are `stage_knobs`
    block_knobs: tuple[str, ...] = ()
    stem_width: Callable[[Sequence[int]], int] = first_width
    token_kinds: tuple[str, ...] = ()   # kinds that run on (B, N, C) tokens instead of (B, C, H, W)
    # Stage-level knob names -> cost direction: +1 when a larger value costs more (a width), -1 when
    # a smaller one does (a reduction ratio). Elastic in a space; slimming steps them to cheaper values.
    stage_knobs: dict[str, int] = field(default_factory=dict)
    # Stage knobs the supernet trains every value of, with α over them (a ``KnobChoice``): the
    # skeleton hands the family the tuple of the space's values instead of the largest one.
    alpha_knobs: tuple[str, ...] = ()
    # Family-wide knobs (``ArchConfig.knobs``) and the value an absent one means.
    knob_defaults: dict[str, Any] = field(default_factory=dict)
    # ``head:`` options of a config: name -> (type, low, high); bool options ignore the range.
    head_options: dict[str, tuple] = field(default_factory=dict)
    variants: tuple[str, ...] = ()
    # timm pretrained-cfg entries of the variants: ``first_conv`` and ``classifier`` (module names;
    # a ``head_dist`` one only where the variant has that head), ``fixed_input_size``, ``crop_pct``
    timm_cfg: dict[str, Any] = field(default_factory=lambda: {"first_conv": "stem.conv", "classifier": ("head.fc",)})
    # Whether a supernet may permute each stage's channels by importance (``reorder_channels``).
    # False where a layer ties the channel orders of adjacent stages, so that no per-stage
    # permutation preserves the function: subnets then take the natural (leading) channels.
    channel_reorder: bool = True


# Every family: a folder of search_spaces/ with a space.yaml, and the module supernets/<family>.py
# that registers it when imported (on first use: importing one family never imports the others).
_FAMILY_MODULES = {p.name: f"supernets.{p.name}" for p in sorted(search_spaces.ROOT.iterdir())
                   if (p / search_spaces.SPACES["paper"]).is_file()}
_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Register a family, and each of its published variants with timm as
    ``nas_<family>_<variant>`` (built from ``search_spaces/<family>/variants/<variant>.yaml``),
    with a pretrained cfg of its own (timm reads it from the family module's ``default_cfgs``)."""
    from timm.models import generate_default_cfgs, register_model

    _FAMILIES[family.name] = family
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


def family_names() -> list[str]:
    return sorted(_FAMILY_MODULES)


def get_family(name: str) -> Family:
    if name not in _FAMILY_MODULES:
        raise ConfigError(f"family: unknown family {short(name)} (known: {', '.join(family_names())})")
    if name not in _FAMILIES:
        importlib.import_module(_FAMILY_MODULES[name])
    return _FAMILIES[name]


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
