"""Fuzz the loaders of user files: N mutated configs, spaces, tables and timings CSVs (seeded).
The promise (tests/input_fuzz.py): built, or one ConfigError line of ≤ 400 chars.
Writes result.md (counts per outcome and per seed file, every crash with its input) here.

    PYTHONPATH=. python experiments/config_fuzz/run.py --inputs 10000 --seed 0
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from tests.input_fuzz import mutate, outcome, seeds, source

HERE = Path(__file__).resolve().parent


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    sources = seeds()
    counts = collections.Counter()
    per_kind = collections.Counter()
    crashes, longest = [], 0
    t0 = time.time()
    for _ in tqdm(range(args.inputs), desc="fuzz", unit="input"):
        kind, name, doc = rng.choice(sources)
        text = mutate(rng, doc, source(kind, doc))
        result, detail = outcome(kind, text)
        counts[result] += 1
        per_kind[(kind, result)] += 1
        if result == "refused":
            longest = max(longest, len(detail))
        if result == "crash":
            crashes.append((name, detail, text))
    wall = time.time() - t0
    lines = ["# Config / space fuzzing", "",
             f"    PYTHONPATH=. python experiments/config_fuzz/run.py --inputs {args.inputs} --seed {args.seed}", "",
             f"{args.inputs} mutated files from {len(sources)} seeds (every shipped space, small and paper; every "
             f"published variant; a slice of the shipped iphone12@224 table; a timings CSV of its keys), {wall:.0f} s. "
             "A config or space is loaded (`ArchConfig.load` / `SearchSpace.load`) and built on the meta device; a "
             "table is loaded and every entry priced; a timings CSV goes through `read_timings`.", "",
             "| outcome | configs | spaces | tables | timings CSVs | all |", "|---|---|---|---|---|---|"]
    for result in ("built", "refused", "crash"):
        lines.append(f"| {result} | " + " | ".join(str(per_kind[(k, result)]) for k in ("config", "space", "table", "timings"))
                     + f" | {counts[result]} |")
    lines += ["", f"Longest refusal message: {longest} characters (limit 400, one line).", ""]
    if crashes:
        lines += [f"## {len(crashes)} crashes", ""]
        for name, detail, text in crashes[:20]:
            lines += [f"- from `{name}`: {detail}", "", "```yaml", text[:1500], "```", ""]
    (HERE / "result.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:14]))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(run())
