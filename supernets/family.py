"""The small interface every family module exposes, and the lookup of families by name.

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

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch.nn as nn

import search_spaces
from nas.core.errors import ConfigError, short

if TYPE_CHECKING:   # annotations only: supernets.config checks configs through this module
    from supernets.config import ArchConfig, BlockSpec, SearchSpace

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
FAMILY_MODULES = {p.name: f"supernets.{p.name}" for p in sorted(search_spaces.ROOT.iterdir())
                   if (p / search_spaces.SPACES["paper"]).is_file()}
FAMILIES: dict[str, Family] = {}


def family_names() -> list[str]:
    return sorted(FAMILY_MODULES)


def get_family(name: str) -> Family:
    if name not in FAMILY_MODULES:
        raise ConfigError(f"family: unknown family {short(name)} (known: {', '.join(family_names())})")
    if name not in FAMILIES:
        importlib.import_module(FAMILY_MODULES[name])
    return FAMILIES[name]
