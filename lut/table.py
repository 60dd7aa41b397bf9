"""LatencyTable: per (device, resolution) latencies keyed by op signature, with provenance.

One human-readable YAML file per table. ``predict(config)`` sums the op graph; a missing key is
an error that lists the keys and the command that fills them: a table never extrapolates.

Entries come in two forms. Estimated or imported entries have one ``ms``. Measured CPU entries
keep both bounding timings of an op, ``cold_ms`` and ``hot_ms`` (``lut.measure.time_rounds``),
and its deploy-form ``params``; inside a network the op costs ``hot + blend * (cold - hot)``,
where the blend, the share of its cold-cache penalty an op pays there, follows the network's
total weight bytes (``CacheModel``): a small network keeps more of its weights in cache from one
forward pass to the next. The cache model is fitted by ``lut.build.calibrate`` on whole networks
and stored in the table's environment, **one per family** (``environment.calibrations``): a table
is shared by every family that deploys at its resolution, and families differ in how their ops
overlap in a network (a blend fitted on iFormer's networks priced FMViT's 10-15 % high), so each
family's networks are priced by the model fitted on its own.
"""
from __future__ import annotations

import copy
import datetime as _dt
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from lut import graph
from lut.backends import BACKENDS
from nas.core import io
from nas.core.errors import UserError
from supernets.config import ArchConfig, OneLineError

SCHEMA = 2
OVERHEAD_KEY = "overhead"
BYTES_PER_PARAM = 4   # float32 deploy weights


@dataclass(frozen=True)
class CacheModel:
    """blend(W) = base + slope * ln(W / 1 MiB), W the network's weight bytes; ln(W) is clamped to
    the range the model was fitted on (no extrapolation) and the blend to [0, 1]. The default,
    used until a table is calibrated, is the constant blend fitted on this machine's
    EfficientFormer configs (experiments/lut_fidelity)."""

    base: float = 0.6
    slope: float = 0.0
    log_mib_range: tuple[float, float] = (-math.inf, math.inf)
    # ms per MB of an op's 4D input and output that it pays alone and not in a network: the
    # layout conversions at a program's edges (a backend with ``layout_boundaries``, XNNPACK)
    boundary_ms_per_mb: float = 0.0

    def blend(self, weight_bytes: float) -> float:
        lo, hi = self.log_mib_range
        x = min(hi, max(lo, math.log(max(weight_bytes, 1.0) / 2**20)))
        return min(1.0, max(0.0, self.base + self.slope * x))

    def to_dict(self) -> dict:
        return {"base": round(self.base, 6), "slope": round(self.slope, 6),
                "log_mib_range": [round(v, 4) for v in self.log_mib_range],
                **({"boundary_ms_per_mb": round(self.boundary_ms_per_mb, 6)} if self.boundary_ms_per_mb else {})}

    @classmethod
    def from_dict(cls, raw: Mapping) -> CacheModel:
        lo, hi = raw.get("log_mib_range", (-math.inf, math.inf))
        return cls(float(raw["base"]), float(raw.get("slope", 0.0)), (float(lo), float(hi)),
                   float(raw.get("boundary_ms_per_mb", 0.0)))


def boundary_mb(ops: list) -> list[float]:
    """Per op of a network (in order), the MB of its 4D input and output (float32): what an op run
    alone converts at its program's edges. An op's output is the next op's input; the last op's
    (the logits) is not 4D."""
    def mb(shape) -> float:
        return BYTES_PER_PARAM * math.prod(shape) / 1e6 if len(shape) == 4 else 0.0

    ins = [mb(op.in_shape) for op in ops]
    return [a + b for a, b in zip(ins, ins[1:] + [0.0])]


# The calibration a table of schema 2 stored before calibrations were per family applies to every
# family (`_calibrations_by_family`)
ANY_FAMILY = "*"


def _calibrations_by_family(environment: dict) -> None:
    """Tables written before calibrations were per family held one cache model (or kind factors)
    and one calibration record; they become the calibration of every family (`ANY_FAMILY`), so an
    existing table prices networks as it did until a build recalibrates it."""
    legacy = {k: environment.pop(k) for k in ("calibration", "cache_model", "kind_factors", "kind_ridge")
              if k in environment}
    if legacy:
        record = dict(legacy.pop("calibration", None) or {})
        environment.setdefault("calibrations", {}).setdefault(ANY_FAMILY, {**record, **legacy})


class TableError(OneLineError):
    """A table file is unusable (wrong schema, device or resolution, malformed)."""


class MissingKeysError(UserError, LookupError):
    def __init__(self, device: str, resolution: int, keys: list[str], fill_hint: str):
        self.device, self.resolution, self.keys = device, resolution, keys
        shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        super().__init__(f"latency table {device}@{resolution} lacks {len(keys)} op(s): {shown}; {fill_hint}")


# Parsed table files by (path, inode, mtime, size): a shipped estimated table is ~6,000 entries and
# 0.8 s to parse, and one command may read it several times (`slim --family all`, the merge in
# `save`). Only a file last modified a while ago is kept: file times tick coarsely (milliseconds),
# so an edit in place right after a read could leave all four the same ("racy git"); any later
# edit gets a later time.
_PARSED: dict[tuple, Any] = {}
_PARSED_KEPT = 8
_SETTLED_S = 2.0


def _read_raw(path: Path) -> Any:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    if key in _PARSED:
        return copy.deepcopy(_PARSED[key])   # callers own what they get: a table's entries are mutated
    raw = io.read_yaml(path)
    if time.time() - stat.st_mtime > _SETTLED_S:
        if len(_PARSED) >= _PARSED_KEPT:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = copy.deepcopy(raw)
    return raw


def _checked(raw: Mapping, path: Path) -> tuple[str, int, dict, dict]:
    """(device, resolution, environment, entries) of a table file, every field checked: a
    hand-edited or truncated table is one clear error, never a wrong prediction."""
    def fail(msg: str):
        raise TableError(f"{path}: {msg}; rebuild the table (nas lut build / estimate) or fix the file")

    device, resolution = raw.get("device"), raw.get("resolution")
    if not isinstance(device, str) or not device:
        fail(f"device {device!r} is not a device name")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
        fail(f"resolution {resolution!r} is not a positive integer")
    environment = raw.get("environment") or {}
    if not isinstance(environment, Mapping):
        fail("environment is not a mapping")
    entries = raw.get("entries") or {}
    if not isinstance(entries, Mapping):
        fail("entries is not a mapping of op keys")
    for key, entry in entries.items():
        if not isinstance(entry, Mapping):
            fail(f"entry {key}: {entry!r} is not a mapping with ms (or cold_ms and hot_ms)")
        timings = ("cold_ms", "hot_ms") if "cold_ms" in entry else ("ms",)
        for name in timings:
            value = entry.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                fail(f"entry {key}: {name} {value!r} is not a finite, non-negative number of milliseconds")
    return device, resolution, dict(environment), {str(k): dict(v) for k, v in entries.items()}


@dataclass
class LatencyTable:
    device: str
    resolution: int
    environment: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None          # where it is saved (a user's copy of a shipped table)
    loaded_from: Path | None = None   # the file it was read from (provenance of its predictions)

    # ------------------------------------------------------------------ io
    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None, resolution: int | None = None) -> "LatencyTable":
        path = Path(path)
        try:
            raw = _read_raw(path)
        except FileNotFoundError:
            raise TableError(f"{path}: latency table not found") from None
        except yaml.YAMLError as e:
            raise TableError(f"{path}: malformed latency table ({e.__class__.__name__})") from None
        if not isinstance(raw, Mapping) or "entries" not in raw:
            raise TableError(f"{path}: not a latency table (no 'entries')")
        if raw.get("schema") != SCHEMA:
            raise TableError(f"{path}: table schema {raw.get('schema')!r} is not {SCHEMA}; rebuild it with "
                             f"`nas lut build --device {raw.get('device', 'DEVICE')}`")
        table = cls(*_checked(raw, path), path, path)
        _calibrations_by_family(table.environment)
        named_device, _, named_res = path.stem.partition("@")
        if named_res and (named_device, named_res) != (table.device, str(table.resolution)):
            raise TableError(f"{path}: named for {named_device}@{named_res} but holds {table.device}@"
                             f"{table.resolution}; rename the file or fix its device/resolution")
        if device is not None and table.device != device:
            raise TableError(f"{path}: table is for device {table.device!r}, not {device!r}")
        if resolution is not None and table.resolution != resolution:
            raise TableError(f"{path}: table is for resolution {table.resolution}, the config needs {resolution}")
        return table

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the table atomically. Under a lock on the file, entries another process wrote
        there since this table was read (two `nas lut build` of different families, a slim that
        measured a missing op) are merged in first, so concurrent writers never drop each
        other's measurements; for a key both hold, this table's entry wins."""
        from filelock import FileLock

        path = Path(path or self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path.with_name(f".{path.name}.lock"))):
            if path.is_file():
                try:
                    on_disk = LatencyTable.load(path, device=self.device, resolution=self.resolution)
                except TableError:
                    on_disk = None   # unreadable: this table replaces it
                if on_disk is not None:
                    for key, entry in on_disk.entries.items():
                        self.entries.setdefault(key, entry)
            self._write(path)
        self.path = path
        return path

    def _write(self, path: Path) -> None:
        data = {
            "schema": SCHEMA,
            "device": self.device,
            "resolution": self.resolution,
            "environment": self.environment,
            "entries": {k: self.entries[k] for k in sorted(self.entries)},
        }
        io.write_yaml(path, data)

    # ------------------------------------------------------------------ queries
    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def ms(self, key: str, blend: float | None = None) -> float:
        """An op's latency; a measured (cold/hot) entry needs the blend of the network it is in
        (default: the uncalibrated `CacheModel`'s)."""
        entry = self.entries[key]
        if "cold_ms" in entry:
            blend = CacheModel().base if blend is None else blend
            return float(entry["hot_ms"]) + blend * (float(entry["cold_ms"]) - float(entry["hot_ms"]))
        return float(entry["ms"])

    def weight_bytes(self, config: ArchConfig) -> float:
        return BYTES_PER_PARAM * sum(float(self.entries[k].get("params", 0)) for k in graph.keys(config))

    def missing(self, config: ArchConfig) -> list[str]:
        self._check_resolution(config)
        return list(dict.fromkeys(k for k in graph.keys(config) if k not in self.entries))

    def breakdown(self, config: ArchConfig, model: CacheModel | None = None) -> list[tuple[str, str, float]]:
        """(op name, key, ms) per op of `config`, priced by its family's cache model (or `model`)."""
        missing = self.missing(config)
        if missing:
            raise MissingKeysError(self.device, self.resolution, missing, self.fill_hint(config.family))
        model = model or self.cache_model(config.family)
        blend = model.blend(self.weight_bytes(config))
        factors = self.kind_factors(config.family)
        ops = graph.ops(config)
        boundary = boundary_mb(ops) if model.boundary_ms_per_mb else [0.0] * len(ops)
        rows = [(op.name, op.key, max(0.0, self.ms(op.key, blend) * factors.get(graph.key_kind(op.key), 1.0)
                                      - model.boundary_ms_per_mb * mb)) for op, mb in zip(ops, boundary)]
        if self.overhead_ms:
            rows.append(("call overhead", OVERHEAD_KEY, self.overhead_ms))
        return rows

    def predict(self, config: ArchConfig, model: CacheModel | None = None) -> float:
        return sum(ms for _, _, ms in self.breakdown(config, model))

    def fill_hint(self, family: str) -> str:
        where = f"--device {self.device} --family {family} --resolution {self.resolution}"
        backend = BACKENDS.get(self.environment.get("backend"))
        if self.environment.get("on_device"):   # a phone: its backend has no estimate
            return f"time them on the device (`nas lut export {where}`, then `nas lut import`)"
        if backend is not None and not backend.on_this_host:   # timed on the device, or estimated
            return (f"estimate them with `nas lut estimate {where}` or time them on the device "
                    f"(`nas lut export {where}`, then `nas lut import`)")
        return f"fill it with `nas lut build {where}`"

    def _check_resolution(self, config: ArchConfig) -> None:
        if config.resolution != self.resolution:
            raise TableError(f"config resolution {config.resolution} does not match table "
                             f"{self.device}@{self.resolution}")

    @property
    def overhead_ms(self) -> float:
        """A fixed cost per network call, paid once (estimated Core ML tables: the harness's
        per-prediction overhead, ``lut.estimate``)."""
        return float(self.environment.get("overhead_ms", 0.0))

    # ------------------------------------------------------------------ how far to trust a prediction
    def estimated(self, config: ArchConfig) -> bool:
        """Is any op of `config` priced by an estimate (no timing of it)?"""
        return any(self.entries[k].get("source") == "estimated" for k in graph.keys(config) if k in self.entries)

    def error_ratio(self, q: float) -> float | None:
        """The q-quantile of (true / estimated) network latency, from the estimate's out-of-sample
        errors (`lut.published.error_ratios`, recorded by `nas lut estimate`), interpolated between
        the recorded quantiles (5 % .. 95 %); None when the table records none."""
        pairs = (self.environment.get("estimate_error") or {}).get("ratio_quantiles")
        if not pairs:
            return None
        qs, ratios = zip(*sorted((float(a), float(b)) for a, b in pairs))
        if not qs[0] <= q <= qs[-1]:
            raise UserError(f"a {q:g} quantile is outside the {qs[0]:g}..{qs[-1]:g} the table's estimate error "
                            f"records; choose a confidence in that range")
        return float(np.interp(q, qs, ratios))

    def interval(self, ms: float, coverage: float = 0.8) -> tuple[float, float] | None:
        """The central `coverage` interval of the true latency of a network estimated at `ms`."""
        lo, hi = self.error_ratio((1 - coverage) / 2), self.error_ratio((1 + coverage) / 2)
        return None if lo is None or hi is None else (ms * lo, ms * hi)

    def trust(self, config: ArchConfig, ms: float | None = None) -> str:
        """How far to trust the prediction `ms` (default: the table's) of `config`: an estimate's
        80 % interval ("estimated, 80 % interval 1.30–1.62 ms"), else the calibration error of a
        timed table ("measured, efficientformer networks calibrated to a median |err| of 2.1 %")."""
        ms = self.predict(config) if ms is None else ms
        if self.estimated(config):
            span = self.interval(ms)
            return (f"estimated, 80 % interval {span[0]:.2f}–{span[1]:.2f} ms" if span else
                    "estimated, no error bar recorded: refresh the table with `nas lut estimate`")
        cal = self.calibration(config.family).get("median_abs_error_pct")
        if cal is not None:
            return f"measured, {config.family} networks calibrated to a median |err| of {cal:.1f} %"
        backend = BACKENDS.get(self.environment.get("backend"))
        if self.environment.get("on_device") or (backend is not None and not backend.on_this_host):
            return "measured on the device"   # imported timings: no networks were timed with them
        return (f"measured, not calibrated on {config.family} networks: `nas lut build --device {self.device} "
                f"--family {config.family}` fits how its ops add up")

    def describe_ms(self, config: ArchConfig, ms: float | None = None) -> str:
        """"1.440 ms (estimated, 80 % interval 1.30–1.62 ms)": the prediction and `trust`."""
        ms = self.predict(config) if ms is None else ms
        return f"{ms:.3f} ms ({self.trust(config, ms)})"

    # ------------------------------------------------------------------ calibration, per family
    def calibration(self, family: str) -> dict[str, Any]:
        """How the table prices `family`'s networks, fitted on its calibration networks: the cache
        model, (a launch-bound GPU) the kind factors, and the calibration's record (networks, their
        measured times, median error). Empty when the family was never calibrated here."""
        calibrations = self.environment.get("calibrations") or {}
        return calibrations.get(family) or calibrations.get(ANY_FAMILY) or {}

    def set_calibration(self, family: str, record: Mapping[str, Any]) -> None:
        self.environment.setdefault("calibrations", {})[family] = dict(record)

    def cache_model(self, family: str) -> CacheModel:
        raw = self.calibration(family).get("cache_model")
        return CacheModel.from_dict(raw) if raw else CacheModel()

    def kind_factors(self, family: str) -> dict[str, float]:
        """Per op kind, the factor a network runs its ops at against their standalone timing (a
        launch-bound GPU, ``lut.build.fit_kind_factors``); a kind not listed runs at 1."""
        return self.calibration(family).get("kind_factors") or {}

    # ------------------------------------------------------------------ updates
    def add(self, key: str, ms: float | None = None, *, source: str = "measured", cold_ms: float | None = None,
            hot_ms: float | None = None, **stats: Any) -> None:
        """Add an entry from a direct latency ``ms`` (estimated or imported) or from measured
        ``cold_ms`` and ``hot_ms`` (priced in a network by the table's cache model; pass the op's
        ``params`` with them)."""
        if (cold_ms is None) != (hot_ms is None) or (ms is None) == (cold_ms is None):
            raise ValueError("give either ms, or both cold_ms and hot_ms")
        entry: dict[str, Any] = {}
        if cold_ms is not None:
            entry.update(cold_ms=cold_ms, hot_ms=hot_ms)
        else:
            entry["ms"] = ms
        entry["source"] = source
        entry.update(stats)
        entry = {k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in entry.items()}
        entry["date"] = _dt.date.today().isoformat()
        self.entries[key] = entry
