"""Fuzz the config and space loaders: N mutated YAMLs (seeded), each loaded and built on meta.
The promise (tests/supernets/config_fuzz.py): built, or one ConfigError line of ≤ 400 chars.
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

from tests.supernets.config_fuzz import mutate, outcome, seeds

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
        text = mutate(rng, doc, yaml.safe_dump(doc, sort_keys=False))
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
             f"{args.inputs} mutated YAMLs from {len(sources)} seed files (every shipped space, small and paper, and "
             f"every published variant), {wall:.0f} s. Each is loaded (`ArchConfig.load` / `SearchSpace.load`) and "
             "what loads is built on the meta device (a family's model / the supernet).", "",
             "| outcome | configs | spaces | all |", "|---|---|---|---|"]
    for result in ("built", "refused", "crash"):
        lines.append(f"| {result} | {per_kind[('config', result)]} | {per_kind[('space', result)]} | {counts[result]} |")
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
