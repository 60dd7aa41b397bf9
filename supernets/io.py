"""Atomic file writes shared by every package.

`supernets` is the root of the dependency chain (`nas` -> `supernets`, `lut` -> `supernets`),
so the one implementation of "write to a temp file, then rename" lives here. A crash or a
Ctrl-C in the middle of a write never leaves a half-written artefact behind.
"""
from __future__ import annotations

import contextlib
import csv
import io as _io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())   # mkstemp makes 0600; a plain write honours the umask
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Temp files an interrupted ``atomic_path`` left next to `path` (a kill mid-write): call it
    when a run (re)starts, before it writes `path` again."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_csv(path: str | os.PathLike, rows: list[dict], fields: list[str] | None = None) -> Path:
    """Rows as CSV (header from `fields`, else the first row's keys), written atomically."""
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def write_yaml(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100))


def read_yaml(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return yaml.safe_load(f)
