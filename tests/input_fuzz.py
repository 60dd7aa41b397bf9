"""Mutated user files, and the promise they are checked against: a config or space YAML loads
and builds (on the meta device), a latency table loads and prices its entries, a timings CSV
imports; or the file is refused with one line of bounded length (ConfigError, TableError,
TimingsError). Nothing else: no other exception type, no multi-line or runaway message.

Shared by the property test (`tests/test_input_fuzz.py`, a small budget in CI) and the long run
(`experiments/config_fuzz/run.py`, ≥ 10,000 inputs). Mutations start from every shipped space
(small and paper), every published variant, a slice of a shipped table and a timings CSV of its
keys, so they probe the fields real files use.
"""
from __future__ import annotations

import functools
import math
import random
import tempfile
import traceback
from pathlib import Path
from typing import Any

import torch
import yaml

import search_spaces
from lut.ondevice import TimingsError, read_timings
from lut.devices import SHIPPED_TABLES
from lut.table import LatencyTable, TableError
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
    table = _table_slice()
    out.append(("table", f"{TABLE_DEVICE}@{TABLE_RESOLUTION}.yaml (slice)", table))
    out.append(("timings", "timings.csv", _timings(table)))
    return out


def source(kind: str, doc: Any) -> str:
    """The file text of a seed document (a timings seed is its CSV text already)."""
    return doc if kind == "timings" else yaml.safe_dump(doc, sort_keys=False)


TABLE_DEVICE, TABLE_RESOLUTION = "iphone12", 224


@functools.cache
def _table_slice(entries: int = 24) -> dict:
    """The shipped iphone12@224 table cut to a few entries."""
    raw = yaml.safe_load((SHIPPED_TABLES / f"{TABLE_DEVICE}@{TABLE_RESOLUTION}.yaml").read_text())
    keys = sorted(raw["entries"])[:: max(1, len(raw["entries"]) // entries)][:entries]
    return {**raw, "entries": {k: raw["entries"][k] for k in keys}}


def _timings(table: dict) -> str:
    return "key,ms,device,note\n" + "".join(f"{k},{e.get('ms', 1.0)},{TABLE_DEVICE},\n" for k, e in table["entries"].items())


def _nodes(doc: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every node of a parsed YAML document."""
    found = [path]
    if len(path) > 12:   # a planted deep nest is one node: mutating inside it tells nothing new
        return found
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
    dropped or repeated, deep nesting), or a character-level edit of `text`: the file's source.
    A CSV (`doc` is its text) gets cell-level edits too."""
    if isinstance(doc, str) and rng.random() < 0.6:
        rows = [line.split(",") for line in text.splitlines()]
        for _ in range(rng.randint(1, 3)):
            row = rng.choice(rows)
            if row:
                row[rng.randrange(len(row))] = str(rng.choice(ODD_VALUES + ["key", "file", "ms", "x,y", '"']))
            if rng.random() < 0.2:
                row.append("extra")
        return "\n".join(",".join(r) for r in rows) + "\n"
    if isinstance(doc, str) or rng.random() < 0.15:   # edits of the source itself: broken YAML, merged tokens, tags
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
    """("built" | "refused" | "crash", detail) for one file: a config, space, table or timings."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / {"table": f"{TABLE_DEVICE}@{TABLE_RESOLUTION}.yaml", "timings": "timings.csv"}.get(
            kind, f"{kind}.yaml")
        path.write_text(text)
        try:
            if kind == "table":
                table = LatencyTable.load(path, device=TABLE_DEVICE, resolution=TABLE_RESOLUTION)
                for key in table.entries:
                    table.ms(key, blend=0.5)
            elif kind == "timings":
                read_timings(path, set(_table_slice()["entries"]))   # the keys an import may name
            elif kind == "config":
                cfg = ArchConfig.load(path)
                with torch.device("meta"):
                    get_family(cfg.family).build(cfg)
            else:
                from supernets.supernet import Supernet

                space = SearchSpace.load(path)
                with torch.device("meta"):
                    Supernet(space, num_classes=10, img_size=space.resolution)
        except (ConfigError, TableError, TimingsError) as e:
            message = str(e)
            if "\n" in message or len(message) > MAX_MESSAGE:
                return "crash", f"message of {len(message)} chars / {message.count(chr(10)) + 1} lines: {message[:200]!r}"
            return "refused", message
        except Exception as e:  # noqa: BLE001 - any other type is what this looks for
            frame = traceback.extract_tb(e.__traceback__)[-1]
            return "crash", f"{type(e).__name__}: {str(e)[:200]} ({Path(frame.filename).name}:{frame.lineno})"
    return "built", ""
