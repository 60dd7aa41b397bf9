"""The round trip to a device that cannot be timed here (an iPhone's Core ML, a phone's
ExecuTorch): what an exporter writes beside its programs (one per op, named by `file_name`, and the
manifest), and how the timings measured on the device come back (`read_timings`, then
`import_timings` into the user's table). ``lut.apple`` and ``lut.pte`` are the exporters.

A timings file has a ``ms`` column and either ``key`` or ``file`` (a program name of the manifest
next to it).
"""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from nas.core.errors import OneLineError

if TYPE_CHECKING:
    import torch

    from lut.table import LatencyTable
    from supernets.family import OpNode

MANIFEST = "manifest.csv"


class TimingsError(OneLineError):
    """A timings file cannot be imported (the message names the row and the fix)."""


def file_name(key: str, suffix: str) -> str:
    """A file name for an op key (keys hold ':' and '>'): a short stable hash, then `suffix`."""
    return f"op-{hashlib.sha1(key.encode()).hexdigest()[:12]}{suffix}"


@dataclass
class ExportResult:
    written: int
    skipped: int          # programs already there (a resumed export)
    manifest: Path


def export_each(ops: dict[str, OpNode], out_dir: Path, suffix: str, write: Callable[[OpNode, torch.Tensor, Path], None],
                progress: Callable[[int], None] | None = None) -> ExportResult:
    """`write(op, x, path)` for every op whose program (`file_name(key, suffix)` in `out_dir`) is
    not there yet, on a fixed random input `x` of the op's shape; then the manifest. Programs
    already written are kept, so a killed export continues where it stopped."""
    import torch

    from nas.core import io

    written = skipped = 0
    rows = []
    gen = torch.Generator().manual_seed(0)
    for key, op in ops.items():
        path = out_dir / file_name(key, suffix)
        x = torch.randn(op.in_shape, generator=gen)
        if path.exists():
            skipped += 1
        else:
            write(op, x, path)
            written += 1
        rows.append({"key": key, "file": path.name, "input_shape": "x".join(map(str, op.in_shape))})
        if progress:
            progress(1)
    manifest = out_dir / MANIFEST
    io.write_csv(manifest, rows)
    return ExportResult(written, skipped, manifest)


def read_timings(path: Path, known_keys: set[str]) -> dict[str, float]:
    """key -> ms from a timings CSV; every problem is an ``TimingsError`` naming the row."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise TimingsError(f"{path}: timings file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TimingsError(f"{path}: unreadable timings file ({type(e).__name__})") from None
    fields = set(rows[0]) if rows else set()
    if "ms" not in fields or not fields & {"key", "file"}:
        raise TimingsError(f"{path}: expected a CSV with columns 'ms' and 'key' (or 'file' from {MANIFEST})")
    extra = fields - {"ms", "key", "file", "device", "note"}
    if extra:
        raise TimingsError(f"{path}: unknown column(s) {', '.join(sorted(map(str, extra)))[:80]} (expected ms, key or "
                           "file, and optionally device, note)")
    by_file = {}
    if "key" not in fields:
        manifest = path.parent / MANIFEST
        if not manifest.is_file():
            raise TimingsError(f"{path}: rows name files but there is no {MANIFEST} next to it; "
                               "add a 'key' column or put the file next to the export's manifest")
        try:
            with open(manifest, newline="") as f:
                listed = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise TimingsError(f"{manifest}: unreadable manifest ({type(e).__name__})") from None
        if not listed or not {"file", "key"} <= set(listed[0]):
            raise TimingsError(f"{manifest}: expected the columns 'file' and 'key' that `nas lut export` writes")
        by_file = {r["file"]: r["key"] for r in listed}
    out: dict[str, float] = {}
    for line, row in enumerate(rows, start=2):
        key = row.get("key") or by_file.get(row.get("file") or "")
        if not key:
            raise TimingsError(f"{path}:{line}: file {row.get('file')!r} is not in {MANIFEST}")
        if key not in known_keys:
            raise TimingsError(f"{path}:{line}: unknown op key {key!r} (not an op of any family's space at this "
                               "resolution); import only timings of packages `nas lut export` wrote")
        try:
            ms = float(row["ms"])
        except (TypeError, ValueError):
            raise TimingsError(f"{path}:{line}: ms {row['ms']!r} is not a number") from None
        if not 0 < ms < math.inf:   # NaN fails too
            raise TimingsError(f"{path}:{line}: ms {row['ms']} must be a positive time in milliseconds")
        out[key] = ms
    if not out:
        raise TimingsError(f"{path}: no timings in the file")
    return out


def import_timings(table: LatencyTable, timings: dict[str, float], origin: str) -> int:
    """Add the timings to `table` as measured entries (what file they came from recorded)."""
    for key, ms in timings.items():
        table.add(key, ms, source="measured", imported_from=origin)
    return len(timings)
