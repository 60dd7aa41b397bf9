"""Run directories: ``<runs>/<run-id>/`` holds one supernet and everything derived from it."""
from __future__ import annotations

import contextlib
import datetime as _dt
import shutil
from pathlib import Path

from nas.errors import UserError
from nas.core import io

DEFAULT_FAMILY = "efficientformer"   # the family a command works on when none is named

SUPERNET = "supernet.pt"
RUN_INFO = "run.yaml"


def new_run_dir(runs: str | Path, family: str, name: str | None = None) -> Path:
    run_id = name or f"{family}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return Path(runs) / run_id


@contextlib.contextmanager
def removed_if_stillborn(run_dir: Path):
    """A run that fails before its first checkpoint leaves no folder behind (a folder holding only
    ``run.yaml`` would pass for a run); one that existed before, or holds a checkpoint, is kept."""
    existed = run_dir.exists()
    try:
        yield run_dir
    except BaseException:
        if not existed and run_dir.is_dir() and not any(run_dir.glob("*.pt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def write_info(run_dir: Path, info: dict) -> None:
    io.write_yaml(run_dir / RUN_INFO, info)


def read_info(run_dir: Path) -> dict:
    try:
        return io.read_yaml(run_dir / RUN_INFO) or {}
    except (OSError, ValueError):
        return {}


def latest_supernet(runs: str | Path, family: str) -> Path:
    """The newest finished supernet of `family` under `runs`."""
    candidates = []
    for ckpt in Path(runs).glob(f"*/{SUPERNET}"):
        info = read_info(ckpt.parent)
        if info.get("family") == family and info.get("complete"):
            candidates.append((ckpt.stat().st_mtime, ckpt))
    if not candidates:
        raise UserError(f"no trained {family} supernet under {runs}/; run `nas train-supernet --family {family}` "
                        "first or pass --supernet PATH")
    return max(candidates)[1]
