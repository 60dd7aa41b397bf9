"""Search spaces and published variants, per family:

* ``<family>/space.yaml``: the paper-scale space; every published variant is a point of it;
* ``<family>/small.yaml``: a space about the size of the family's smallest variant (the quick
  start and the fast tests use it: its supernet trains in minutes on two cores);
* ``<family>/variants/*.yaml``: the published variants.

This package is data: the YAML files ship with the distribution and are found relative to it.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
SPACES = {"paper": "space.yaml", "small": "small.yaml"}   # --space names -> file


def space_path(family: str, space: str = "paper") -> Path:
    """The shipped space `space` ('paper' or 'small') of `family`."""
    return ROOT / family / SPACES[space]


def variant_path(family: str, variant: str) -> Path:
    return ROOT / family / "variants" / f"{variant}.yaml"


def variant_names(family: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / family / "variants").glob("*.yaml"))


def resolve(family: str, space: str | None) -> Path:
    """A ``--space`` value: a shipped space's name ('paper', 'small') or a YAML path."""
    return space_path(family, space) if space in SPACES else Path(space)


def shipped(which: str) -> list[str]:
    """The shipped space names a ``--space small|paper|all`` value stands for."""
    return list(SPACES) if which == "all" else [which]
