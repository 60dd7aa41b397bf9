"""Mutated config and space YAMLs, and the promise they are checked against: every file loads
and builds (on the meta device), or is refused with one ConfigError line of bounded length.
Nothing else: no other exception type, no multi-line or runaway message.

Shared by the property test (`test_config_fuzz.py`, a small budget in CI) and the long run
(`experiments/config_fuzz/run.py`, ≥ 10,000 inputs). Mutations start from every shipped space
(small and paper) and every published variant, so they probe the fields real files use.
"""
from __future__ import annotations

import math
import random
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

import search_spaces
from supernets.config import ArchConfig, ConfigError, SearchSpace
from supernets.registry import family_names, get_family

MAX_MESSAGE = 400   # characters: a message names the field and shows a short value, never the file

ODD_VALUES: list[Any] = [
    -1, 0, 1, 2, 3, 7, 17, 100_000, 10**12, -(10**12), 0.5, 1e308, -0.0, math.nan, math.inf, -math.inf,
    "", "abc", "mb4d", "mb3d", "identity", "1e3", "x" * 5_000, None, True, False, [], {}, [1, 2], [[1]],
    {"x": 1}, {1: "a", "b": 2}, {"distillation": "maybe"}, ["mb4d"] * 3, [48, 96],
]


def seeds() -> list[tuple[str, str, dict]]:
    """(kind, name, parsed document) of every shipped space and published variant."""
    out = []
    for family in family_names():
        for which in search_spaces.SPACES:
            path = search_spaces.space_path(family, which)
            out.append(("space", f"{family}/{path.name}", yaml.safe_load(path.read_text())))
        for variant in sorted((Path(search_spaces.__file__).parent / family / "variants").glob("*.yaml")):
            out.append(("config", f"{family}/variants/{variant.name}", yaml.safe_load(variant.read_text())))
    return out


def _nodes(doc: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every node of a parsed YAML document."""
    found = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += _nodes(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _nodes(v, path + (i,))
    return found


def _deep(depth: int) -> Any:
    node: Any = 1
    for _ in range(depth):
        node = [node]
    return node


def mutate(rng: random.Random, doc: Any, text: str) -> str:
    """One to three mutations of `doc` (values replaced, keys dropped or added, list items
    dropped or repeated, deep nesting), or a character-level edit of `text`: YAML source."""
    if rng.random() < 0.15:   # edits of the source itself: broken YAML, merged tokens, tags
        chars = list(text)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(chars) + 1)
            op = rng.random()
            if op < 0.4 and chars:
                del chars[min(i, len(chars) - 1)]
            elif op < 0.8:
                chars.insert(i, rng.choice("{}[]:,-'\"!&*#|>\n 0123456789ax"))
            else:
                chars.insert(i, rng.choice(["!!python/object:os.system ", "&a ", "*a ", "!!binary ", "? "]))
        return "".join(chars)
    doc = yaml.safe_load(yaml.safe_dump(doc))   # a copy
    for _ in range(rng.randint(1, 3)):
        paths = _nodes(doc)
        path = rng.choice(paths)
        op = rng.random()
        if not path:
            doc = rng.choice(ODD_VALUES) if op < 0.2 else doc
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if op < 0.55:
            parent[key] = rng.choice(ODD_VALUES)
        elif op < 0.65:
            parent[key] = _deep(rng.choice([5, 50, 600]))
        elif op < 0.8:
            del parent[key]
        elif isinstance(parent, dict):
            parent[rng.choice(["foo", 1, "knobs", "widths", "options", "mlp_ratio", None])] = rng.choice(ODD_VALUES)
        else:
            parent.insert(key, parent[key])
    try:
        return yaml.safe_dump(doc, sort_keys=False)
    except (RecursionError, yaml.YAMLError):
        return text


def outcome(kind: str, text: str) -> tuple[str, str]:
    """("built" | "refused" | "crash", detail) for one YAML source of a config or a space."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{kind}.yaml"
        path.write_text(text)
        try:
            if kind == "config":
                cfg = ArchConfig.load(path)
                with torch.device("meta"):
                    get_family(cfg.family).build(cfg)
            else:
                from supernets.supernet import Supernet

                space = SearchSpace.load(path)
                with torch.device("meta"):
                    Supernet(space, num_classes=10, img_size=space.resolution)
        except ConfigError as e:
            message = str(e)
            if "\n" in message or len(message) > MAX_MESSAGE:
                return "crash", f"message of {len(message)} chars / {message.count(chr(10)) + 1} lines: {message[:200]!r}"
            return "refused", message
        except Exception as e:  # noqa: BLE001 - any other type is what this looks for
            return "crash", f"{type(e).__name__}: {str(e)[:200]}"
    return "built", ""
