"""LatencyTable: per (device, resolution) latencies keyed by op signature, with provenance.

One human-readable YAML file per table. ``predict(config)`` sums the op graph; a missing key is
an error that lists the keys and the command that fills them: a table never extrapolates.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from lut import graph
from supernets import io
from supernets.config import ArchConfig

SCHEMA = 1


class TableError(ValueError):
    """A table file is unusable (wrong schema, device or resolution, malformed)."""


class MissingKeysError(LookupError):
    def __init__(self, device: str, resolution: int, keys: list[str], fill_hint: str):
        self.device, self.resolution, self.keys = device, resolution, keys
        shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        super().__init__(f"latency table {device}@{resolution} lacks {len(keys)} op(s): {shown}; {fill_hint}")


@dataclass
class LatencyTable:
    device: str
    resolution: int
    environment: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    # ------------------------------------------------------------------ io
    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None, resolution: int | None = None) -> "LatencyTable":
        path = Path(path)
        try:
            raw = io.read_yaml(path)
        except FileNotFoundError:
            raise TableError(f"{path}: latency table not found") from None
        except yaml.YAMLError as e:
            raise TableError(f"{path}: malformed latency table ({e.__class__.__name__})") from None
        if not isinstance(raw, Mapping) or "entries" not in raw:
            raise TableError(f"{path}: not a latency table (no 'entries')")
        if raw.get("schema") != SCHEMA:
            raise TableError(f"{path}: table schema {raw.get('schema')!r} is not {SCHEMA}; rebuild it with "
                             f"`nas lut build --device {raw.get('device', 'DEVICE')}`")
        table = cls(str(raw["device"]), int(raw["resolution"]), dict(raw.get("environment") or {}),
                    {str(k): dict(v) for k, v in (raw.get("entries") or {}).items()}, path)
        if device is not None and table.device != device:
            raise TableError(f"{path}: table is for device {table.device!r}, not {device!r}")
        if resolution is not None and table.resolution != resolution:
            raise TableError(f"{path}: table is for resolution {table.resolution}, the config needs {resolution}")
        return table

    def save(self, path: str | os.PathLike | None = None) -> Path:
        path = Path(path or self.path)
        data = {
            "schema": SCHEMA,
            "device": self.device,
            "resolution": self.resolution,
            "environment": self.environment,
            "entries": {k: self.entries[k] for k in sorted(self.entries)},
        }
        io.write_yaml(path, data)
        self.path = path
        return path

    # ------------------------------------------------------------------ queries
    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def ms(self, key: str) -> float:
        return float(self.entries[key]["ms"])

    def missing(self, config: ArchConfig) -> list[str]:
        self._check_resolution(config)
        return list(dict.fromkeys(k for k in graph.keys(config) if k not in self.entries))

    def breakdown(self, config: ArchConfig) -> list[tuple[str, str, float]]:
        missing = self.missing(config)
        if missing:
            raise MissingKeysError(self.device, self.resolution, missing, self.fill_hint(config.family))
        return [(op["name"], op["key"], self.ms(op["key"])) for op in graph.ops(config)]

    def predict(self, config: ArchConfig) -> float:
        return sum(ms for _, _, ms in self.breakdown(config)) + float(self.environment.get("model_overhead_ms", 0.0))

    def fill_hint(self, family: str) -> str:
        return f"fill it with `nas lut build --device {self.device} --family {family} --resolution {self.resolution}`"

    def _check_resolution(self, config: ArchConfig) -> None:
        if config.resolution != self.resolution:
            raise TableError(f"config resolution {config.resolution} does not match table "
                             f"{self.device}@{self.resolution}")

    # ------------------------------------------------------------------ updates
    def add(self, key: str, ms: float, *, source: str = "measured", **stats: Any) -> None:
        entry = {"ms": round(float(ms), 6), "source": source}
        entry.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in stats.items()})
        entry["date"] = _dt.date.today().isoformat()
        self.entries[key] = entry
