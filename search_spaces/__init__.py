"""Search spaces (``<family>/space.yaml``) and published variants (``<family>/variants/*.yaml``).

This package is data: the YAML files ship with the distribution and are found relative to it.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def space_path(family: str) -> Path:
    return ROOT / family / "space.yaml"


def variant_path(family: str, variant: str) -> Path:
    return ROOT / family / "variants" / f"{variant}.yaml"


def variant_names(family: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / family / "variants").glob("*.yaml"))
