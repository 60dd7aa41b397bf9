"""ArchConfig and SearchSpace: plain data with YAML round-trip and field-naming validation.

An ArchConfig is one concrete architecture; a SearchSpace is what a supernet can express.
Both are validated on load, and every error names the offending field, e.g.
``stages[3].width: 450 is not a multiple of 16``. Family-specific rules (which block kinds
exist, structural constraints) are checked by the family module through the registry.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import yaml

from nas.core import io
from nas.core.errors import ConfigError, OneLineError, short  # noqa: F401 (their home for callers)
from supernets.family import get_family

IDENTITY = "identity"
MAX_WIDTH = 8192        # channels; a larger stage is a typo, not a network (and would not fit in memory)
MAX_RESOLUTION = 4096   # pixels per side: 16 M tokens at stride 4 is already beyond any device here
MAX_CLASSES = 100_000   # ImageNet-22k has 21,841
MAX_DEPTH = 64          # blocks (or slots) per stage; the deepest published stage has 18


def _fail(where: str, msg: str) -> None:
    raise ConfigError(f"{where}: {msg}" if where else msg)


def _names(keys: Iterable) -> str:
    """Keys of a user's mapping, listed in a stable order whatever their types."""
    return ", ".join(sorted(short(k) if not isinstance(k, str) else k for k in keys))


def _require(mapping: Mapping, key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping):
        _fail(where, f"expected a mapping, got {type(mapping).__name__}")
    if key not in mapping:
        _fail(f"{where}.{key}" if where else key, "is required")
    return mapping[key]


def _int(value: Any, where: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(where, f"{short(value)} is not an integer")
    if minimum is not None and value < minimum:
        _fail(where, f"{value} must be >= {minimum}")
    if maximum is not None and value > maximum:
        _fail(where, f"{value} must be <= {maximum}")
    return value


def _unknown_keys(mapping: Mapping, allowed: Iterable[str], where: str) -> None:
    extra = set(mapping) - set(allowed)
    if extra:
        _fail(where, f"unknown field(s) {_names(extra)} (allowed: {', '.join(sorted(allowed))})")


def _head(raw: Any, options: Mapping[str, tuple], family: str) -> dict:
    """A config's or space's ``head``: only the family's options, each of its type and range."""
    head = raw or {}
    if not isinstance(head, Mapping):
        _fail("head", f"expected a mapping such as {{distillation: true}}, got {short(head)}")
    _unknown_keys(head, options, "head") if options else (
        _fail("head", f"{family} has no head options, got {_names(head)}") if head else None)
    for name, value in head.items():
        kind, low, high = options[name]
        if kind is bool:
            if not isinstance(value, bool):
                _fail(f"head.{name}", f"{short(value)} is not true or false")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            _fail(f"head.{name}", f"{short(value)} is not a number in [{low}, {high}]")
    return dict(head)


@dataclass(frozen=True)
class BlockSpec:
    """One block of a stage: a kind name plus per-block knobs (e.g. ``hf_branches``)."""

    kind: str
    knobs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any, where: str) -> "BlockSpec":
        if isinstance(raw, str):
            return cls(raw)
        if isinstance(raw, Mapping):
            kind = _require(raw, "kind", where)
            if not isinstance(kind, str):
                _fail(f"{where}.kind", f"{kind!r} is not a block kind name")
            return cls(kind, {k: v for k, v in raw.items() if k != "kind"})
        _fail(where, f"expected a block kind name or a mapping with 'kind', got {raw!r}")

    def to_yaml(self) -> Any:
        return self.kind if not self.knobs else {"kind": self.kind, **self.knobs}

    def __str__(self) -> str:
        if not self.knobs:
            return self.kind
        return self.kind + "(" + ",".join(f"{k}={v}" for k, v in sorted(self.knobs.items())) + ")"


class _Record:
    """Shared by ArchConfig and SearchSpace: load from YAML through ``from_dict``; copy with changes."""

    @classmethod
    def load(cls, path: str | os.PathLike):
        return cls.from_dict(_load_yaml(path))

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class StageConfig:
    width: int
    blocks: tuple[BlockSpec, ...]
    # Stage-level family knobs, written next to `width` in YAML (MobileViT's transformer width
    # `dim`, FMViT's FMB splits); which names exist is the family's `stage_knobs`.
    knobs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArchConfig(_Record):
    """A concrete architecture of one family (identity choices are simply absent)."""

    family: str
    resolution: int
    num_classes: int
    stem_width: int
    stages: tuple[StageConfig, ...]
    head: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)  # provenance only; never affects the model
    # Widths must be multiples of this. 16 everywhere except published variants with off-grid
    # widths (FastViT-MA36: 76/152/304/608), which declare `width_step: 4`.
    width_step: int = 16
    knobs: Mapping[str, Any] = field(default_factory=dict)   # family-wide knobs (MobileViT flavour)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_dict(cls, raw: Any) -> "ArchConfig":
        if not isinstance(raw, Mapping):
            _fail("", f"an ArchConfig must be a mapping, got {type(raw).__name__}")
        _unknown_keys(raw, ["family", "name", "resolution", "num_classes", "width_step", "stem", "stages", "head",
                            "knobs", "meta"], "config")
        width_step = _int(raw.get("width_step", 16), "width_step", 1, MAX_WIDTH)
        family = _require(raw, "family", "")
        if not isinstance(family, str):
            _fail("family", f"{family!r} is not a family name")
        fam = get_family(family)
        resolution = _int(_require(raw, "resolution", ""), "resolution", 32, MAX_RESOLUTION)
        if resolution % 32:
            _fail("resolution", f"{resolution} is not a multiple of 32 (the network downsamples by 32)")
        num_classes = _int(raw.get("num_classes", 1000), "num_classes", 1, MAX_CLASSES)
        stages_raw = _require(raw, "stages", "")
        if not isinstance(stages_raw, list) or not stages_raw:
            _fail("stages", "must be a non-empty list")
        stages = []
        for i, s in enumerate(stages_raw):
            where = f"stages[{i}]"
            if not isinstance(s, Mapping):
                _fail(where, "expected a mapping with 'width' and 'blocks'")
            _unknown_keys(s, ["width", "blocks", *fam.stage_knobs], where)
            width = _int(_require(s, "width", where), f"{where}.width", 1, MAX_WIDTH)
            if width % width_step:
                _fail(f"{where}.width", f"{width} is not a multiple of {width_step}")
            blocks_raw = s.get("blocks", [])
            if not isinstance(blocks_raw, list):
                _fail(f"{where}.blocks", "must be a list")
            if len(blocks_raw) > MAX_DEPTH:
                _fail(f"{where}.blocks", f"{len(blocks_raw)} blocks; at most {MAX_DEPTH} per stage")
            blocks = tuple(BlockSpec.parse(b, f"{where}.blocks[{k}]") for k, b in enumerate(blocks_raw))
            stages.append(StageConfig(width, blocks, {k: v for k, v in s.items() if k in fam.stage_knobs}))
        stem = raw.get("stem", {}) or {}
        if not isinstance(stem, Mapping):
            _fail("stem", "expected a mapping such as {width: 48}")
        stem_width = _int(stem.get("width", stages[0].width), "stem.width", 1, MAX_WIDTH)
        head = _head(raw.get("head"), fam.head_options, family)
        knobs = raw.get("knobs", {}) or {}
        if not isinstance(knobs, Mapping):
            _fail("knobs", f"expected a mapping such as {{flavour: v1}}, got {short(knobs)}")
        meta = raw.get("meta", {}) or {}
        if not isinstance(meta, Mapping):
            _fail("meta", f"expected a mapping (provenance such as {{device: iphone12}}), got {short(meta)}")
        name = raw.get("name")
        cfg = cls(family, resolution, num_classes, stem_width, tuple(stages), dict(head),
                  str(name) if name is not None else None, dict(meta), width_step, dict(knobs))
        check_shared_rules(fam, cfg)
        fam.validate(cfg)
        return cfg

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"family": self.family}
        if self.name:
            out["name"] = self.name
        out.update(resolution=self.resolution, num_classes=self.num_classes)
        if self.width_step != 16:
            out["width_step"] = self.width_step
        out["stem"] = {"width": self.stem_width}
        if self.head:
            out["head"] = dict(self.head)
        if self.knobs:
            out["knobs"] = dict(self.knobs)
        out["stages"] = [{"width": s.width, **s.knobs, "blocks": [b.to_yaml() for b in s.blocks]}
                         for s in self.stages]
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    def save(self, path: str | os.PathLike) -> None:
        io.write_yaml(path, self.to_dict())

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s.blocks) for s in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.stages)

    def summary(self) -> str:
        parts = []
        for s in self.stages:
            kinds = [str(b) for b in s.blocks]
            knobs = "".join(f",{k}={v}" for k, v in s.knobs.items())
            parts.append(f"{s.width}{knobs}:[{' '.join(kinds)}]")
        return " | ".join(parts)


@dataclass(frozen=True)
class StageSpace:
    max_width: int
    min_width: int
    slots: int
    choices: tuple[str, ...]
    min_blocks: int = 1
    # Elastic stage knobs: name -> allowed values, cheapest first (the supernet holds the last).
    knobs: Mapping[str, tuple] = field(default_factory=dict)
    # Explicit width options, ascending, when the grid min_width..max_width in steps of width_step
    # is not wanted: a paper-scale space keeps a coarse grid and adds published off-grid widths
    # (FastViT-MA36's 76/152/304/608) without multiplying every stage's options.
    options: tuple[int, ...] = ()


@dataclass(frozen=True)
class SearchSpace(_Record):
    """What one family's supernet can express: per stage widths, MetaPath slots and choices."""

    family: str
    resolution: int
    num_classes: int
    width_step: int
    stages: tuple[StageSpace, ...]
    head: Mapping[str, Any] = field(default_factory=dict)
    knobs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any) -> "SearchSpace":
        if not isinstance(raw, Mapping):
            _fail("", f"a SearchSpace must be a mapping, got {type(raw).__name__}")
        _unknown_keys(raw, ["family", "resolution", "num_classes", "width_step", "stages", "head", "knobs"], "space")
        family = _require(raw, "family", "")
        resolution = _int(_require(raw, "resolution", ""), "resolution", 32, MAX_RESOLUTION)
        if resolution % 32:
            _fail("resolution", f"{resolution} is not a multiple of 32")
        num_classes = _int(raw.get("num_classes", 1000), "num_classes", 1, MAX_CLASSES)
        step = _int(raw.get("width_step", 16), "width_step", 1, MAX_WIDTH)
        if not isinstance(family, str):
            _fail("family", f"{family!r} is not a family name")
        fam = get_family(family)
        stages_raw = _require(raw, "stages", "")
        if not isinstance(stages_raw, list) or not stages_raw:
            _fail("stages", "must be a non-empty list")
        stages = []
        for i, s in enumerate(stages_raw):
            where = f"stages[{i}]"
            if not isinstance(s, Mapping):
                _fail(where, "expected a mapping")
            _unknown_keys(s, ["max_width", "min_width", "widths", "slots", "choices", "min_blocks",
                              *fam.stage_knobs], where)
            options: tuple[int, ...] = ()
            if "widths" in s:
                if "max_width" in s or "min_width" in s:
                    _fail(f"{where}.widths", "give either widths (a list) or min_width/max_width (a grid), not both")
                raw_widths = s["widths"]
                if not isinstance(raw_widths, list) or not raw_widths:
                    _fail(f"{where}.widths", f"expected a non-empty list of widths, got {raw_widths!r}")
                options = tuple(sorted({_int(w, f"{where}.widths", step, MAX_WIDTH) for w in raw_widths}))
                min_w, max_w = options[0], options[-1]
            else:
                max_w = _int(_require(s, "max_width", where), f"{where}.max_width", step, MAX_WIDTH)
                min_w = _int(s.get("min_width", step), f"{where}.min_width", step)
            for name, w in (("widths" if options else "max_width", max_w), ("widths" if options else "min_width", min_w),
                            *(("widths", w) for w in options)):
                if w % step:
                    _fail(f"{where}.{name}", f"{w} is not a multiple of {step}")
            if min_w > max_w:
                _fail(f"{where}.min_width", f"{min_w} exceeds max_width {max_w}")
            slots = _int(_require(s, "slots", where), f"{where}.slots", 1, MAX_DEPTH)
            choices = _require(s, "choices", where)
            if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
                _fail(f"{where}.choices", "must be a non-empty list of block kind names")
            min_blocks = _int(s.get("min_blocks", 1 if IDENTITY in choices else slots), f"{where}.min_blocks", 0)
            if min_blocks > slots:
                _fail(f"{where}.min_blocks", f"{min_blocks} exceeds slots {slots}")
            knobs = {}
            for name in fam.stage_knobs:
                if name in s:
                    values = s[name] if isinstance(s[name], list) else [s[name]]
                    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                        _fail(f"{where}.{name}", f"expected a number or a non-empty list of numbers, got {short(s[name])}")
                    knobs[name] = tuple(sorted(set(values), reverse=fam.stage_knobs[name] < 0))
            stages.append(StageSpace(max_w, min_w, slots, tuple(choices), min_blocks, knobs, options))
        knobs = raw.get("knobs", {}) or {}
        if not isinstance(knobs, Mapping):
            _fail("knobs", f"expected a mapping such as {{flavour: v1}}, got {short(knobs)}")
        space = cls(family, resolution, num_classes, step, tuple(stages),
                    _head(raw.get("head"), fam.head_options, family), dict(knobs))
        check_shared_rules(fam, space)
        fam.validate_space(space)
        return space

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "width_step": self.width_step,
            "head": dict(self.head),
            "knobs": dict(self.knobs),
            "stages": [
                {**({"widths": list(s.options)} if s.options else {"max_width": s.max_width, "min_width": s.min_width}),
                 "slots": s.slots, "choices": list(s.choices), "min_blocks": s.min_blocks,
                 **{k: list(v) for k, v in s.knobs.items()}}
                for s in self.stages
            ],
        }

    def with_stage(self, index: int, **changes: Any) -> "SearchSpace":
        stages = list(self.stages)
        stages[index] = dataclasses.replace(stages[index], **changes)
        return self.replace(stages=tuple(stages))

    def widths(self, stage: int) -> list[int]:
        """The stage's width options, ascending."""
        s = self.stages[stage]
        return list(s.options) if s.options else list(range(s.min_width, s.max_width + 1, self.width_step))

    def narrower(self, stage: int, width: int) -> int | None:
        """The next width option below `width` (None at the stage's minimum)."""
        below = [w for w in self.widths(stage) if w < width]
        return below[-1] if below else None

    def supernet_knobs(self, stage: int) -> dict[str, Any]:
        return {k: v[-1] for k, v in self.stages[stage].knobs.items()}

    def cheapest_knobs(self, stage: int) -> dict[str, Any]:
        return {k: v[0] for k, v in self.stages[stage].knobs.items()}


@dataclass(frozen=True)
class Choice:
    """A point of a SearchSpace in slot coordinates: per stage a width and a kind per slot.

    An ArchConfig drops identity slots; a Choice keeps them, so it knows which supernet slot
    each kept block inherits its weights from.
    """

    widths: tuple[int, ...]
    kinds: tuple[tuple[str, ...], ...]
    # Per stage, the values of its elastic knobs as sorted (name, value) pairs (hashable). A stage
    # (or the whole tuple) left empty takes the space's costliest values: the supernet's own.
    knobs: tuple[tuple[tuple[str, Any], ...], ...] = ()

    def stage_knobs(self, space: SearchSpace, stage: int) -> dict[str, Any]:
        own = dict(self.knobs[stage]) if stage < len(self.knobs) else {}
        return {**space.supernet_knobs(stage), **own}

    def to_config(self, space: SearchSpace, num_classes: int | None = None, **extra: Any) -> ArchConfig:
        stages = tuple(
            StageConfig(w, tuple(BlockSpec(k) for k in kinds if k != IDENTITY), self.stage_knobs(space, j))
            for j, (w, kinds) in enumerate(zip(self.widths, self.kinds))
        )
        fam = get_family(space.family)
        extra = {"width_step": space.width_step, "knobs": dict(space.knobs), **extra}
        return ArchConfig(space.family, space.resolution, num_classes or space.num_classes,
                          fam.stem_width(self.widths), stages, dict(space.head), **extra)

    @classmethod
    def from_config(cls, config: ArchConfig, space: SearchSpace) -> "Choice":
        """Map a config onto slots: the blocks of a stage fill its first slots in order."""
        if config.family != space.family:
            _fail("family", f"config is {config.family!r} but the space is {space.family!r}")
        if len(config.stages) != len(space.stages):
            _fail("stages", f"config has {len(config.stages)} stages, the space has {len(space.stages)}")
        fam = get_family(space.family)
        for name in sorted(set(config.knobs) | set(space.knobs) | set(fam.knob_defaults)):
            ours = config.knobs.get(name, fam.knob_defaults.get(name))
            theirs = space.knobs.get(name, fam.knob_defaults.get(name))
            if ours != theirs:
                _fail(f"knobs.{name}", f"the config has {ours!r}, the space {theirs!r}")
        if config.stem_width != fam.stem_width(config.widths):
            _fail("stem.width", f"{config.stem_width} is not the family's stem for these widths "
                                f"({fam.stem_width(config.widths)}); a space's sub-network cannot have it")
        kinds, knobs = [], []
        for i, (st, sp) in enumerate(zip(config.stages, space.stages)):
            where = f"stages[{i}]"
            allowed = space.widths(i)
            if st.width not in allowed:
                span = (f"{sp.min_width}..{sp.max_width} in steps of {space.width_step}" if not sp.options
                        else ", ".join(map(str, sp.options)))
                _fail(f"{where}.width", f"{st.width} is not a width of the space ({span})")
            if len(st.blocks) > sp.slots:
                _fail(f"{where}.blocks", f"{len(st.blocks)} blocks but the space has {sp.slots} slots")
            for k, b in enumerate(st.blocks):
                if b.kind not in sp.choices:
                    _fail(f"{where}.blocks[{k}]", f"{b.kind!r} is not a choice of this stage ({', '.join(sp.choices)})")
                if b.knobs:
                    # a sub-network's blocks take their knobs from the stage; a per-block value
                    # would be silently lost, so the config is not a point of the space
                    _fail(f"{where}.blocks[{k}]", f"per-block knob(s) {', '.join(sorted(b.knobs))} cannot be "
                                                  "expressed by a space; set them on the stage")
            for name, allowed in sp.knobs.items():
                value = st.knobs.get(name, allowed[-1])
                if value not in allowed:
                    _fail(f"{where}.{name}", f"{value} is not one of the space's values {list(allowed)}")
            kinds.append(tuple(b.kind for b in st.blocks) + (IDENTITY,) * (sp.slots - len(st.blocks)))
            knobs.append(tuple(sorted((k, st.knobs.get(k, v[-1])) for k, v in sp.knobs.items())))
        return cls(config.widths, tuple(kinds), tuple(knobs))

    def replace_kind(self, stage: int, slot: int, kind: str) -> "Choice":
        kinds = [list(k) for k in self.kinds]
        kinds[stage][slot] = kind
        return Choice(self.widths, tuple(tuple(k) for k in kinds), self.knobs)

    def replace_width(self, stage: int, width: int) -> "Choice":
        widths = list(self.widths)
        widths[stage] = width
        return Choice(tuple(widths), self.kinds, self.knobs)

    def replace_knob(self, space: SearchSpace, stage: int, name: str, value: Any) -> "Choice":
        knobs = [tuple(sorted(self.stage_knobs(space, j).items())) for j in range(len(self.widths))]
        knobs[stage] = tuple(sorted({**dict(knobs[stage]), name: value}.items()))
        return Choice(self.widths, self.kinds, tuple(knobs))

    def to_dict(self) -> dict:
        out = {"widths": list(self.widths), "kinds": [list(k) for k in self.kinds]}
        if any(self.knobs):
            out["knobs"] = [dict(k) for k in self.knobs]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping) -> "Choice":
        knobs = tuple(tuple(sorted(k.items())) for k in raw.get("knobs", ()))
        return cls(tuple(raw["widths"]), tuple(tuple(k) for k in raw["kinds"]), knobs)


def _load_yaml(path: str | os.PathLike) -> Any:
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply to be a config or a space") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', e)}") from None


# ---------------------------------------------------------------------------- rules every family shares
def check_shared_rules(fam, cfg_or_space) -> None:
    """What every family requires of a config or a space, from the fields its `Family` declares:
    family knobs it knows, block kinds it has, block knobs its blocks take, and a space's slot
    choices among its kinds (or identity). Run before the family's own `validate`."""
    knobs = cfg_or_space.knobs
    for k in sorted(map(str, knobs)):
        if k in fam.stage_knobs:
            _fail(f"knobs.{k}", f"{k} is a stage knob; write `{k}: {knobs[k]}` on each stage instead")
    unknown = set(map(str, knobs)) - set(fam.knob_defaults)
    if unknown:
        takes = f"takes {', '.join(fam.knob_defaults)}" if fam.knob_defaults else "has no family knobs"
        _fail("knobs", f"unknown knob(s) {', '.join(sorted(unknown))} ({fam.name} {takes})")
    for j, st in enumerate(cfg_or_space.stages):
        for c in getattr(st, "choices", ()):
            if c not in (*fam.block_kinds, IDENTITY):
                _fail(f"stages[{j}].choices", f"unknown choice {c!r} ({fam.name} has {', '.join(fam.block_kinds)}, "
                      "identity)")
        for i, b in enumerate(getattr(st, "blocks", ())):
            where = f"stages[{j}].blocks[{i}]"
            if b.kind not in fam.block_kinds:
                _fail(where, f"unknown block kind {b.kind!r} ({fam.name} has {', '.join(fam.block_kinds)})")
            extra = set(map(str, b.knobs)) - set(fam.block_knobs)
            if extra:
                stage_owned = f"; {', '.join(fam.stage_knobs)} belong to the stage" if fam.stage_knobs else ""
                _fail(where, f"unknown knob(s) {', '.join(sorted(extra))} ({fam.name} blocks take "
                      f"{', '.join(fam.block_knobs) or 'none'}{stage_owned})")
