"""timm's own ``tests/test_models.py``, fetched from the sdist of the installed timm, never kept here.

The repository holds only code written for this project, so timm's test file is downloaded when
the suite runs (``pip download --no-deps --no-binary :all: timm==<installed>``), its one member
extracted, and cached outside the repository (``$NAS_TIMM_TESTS_CACHE``, else
``~/.cache/nas/timm-tests/<version>/``): the download happens once per machine and timm version.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import timm

MEMBER = "tests/test_models.py"


def fetch_command(version: str = timm.__version__) -> str:
    return f"pip download --no-deps --no-binary :all: timm=={version}"


def cache_dir(version: str = timm.__version__) -> Path:
    root = os.environ.get("NAS_TIMM_TESTS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "nas" / "timm-tests"
    return Path(root) / version


def test_models_file(version: str = timm.__version__) -> Path:
    """The cached ``tests/test_models.py`` of timm `version`, downloaded first if needed.
    Raises ``RuntimeError`` with one line saying why when it cannot be had."""
    target = cache_dir(version) / "test_models.py"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                   "--quiet", f"timm=={version}", "-d", tmp],
                                  capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise RuntimeError("pip download timed out after 600 s") from None
        sdists = sorted(Path(tmp).glob("timm-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            last = (done.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
            raise RuntimeError(f"pip download failed: {last[:200]}")
        with tarfile.open(sdists[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("/" + MEMBER)), None)
            if member is None:
                raise RuntimeError(f"{sdists[0].name} holds no {MEMBER}")
            text = tar.extractfile(member).read()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_target = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp_target.write_bytes(text)
    os.replace(tmp_target, target)        # a concurrent fetch writes the same bytes
    return target
