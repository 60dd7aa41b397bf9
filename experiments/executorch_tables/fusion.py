"""Does XNNPACK fuse across our op boundaries? nn-Meter's test on consecutive op pairs (issue #31).

nn-Meter calls two ops fused when T1 + T2 - T12 > α · min(T1, T2): the pair run as one program
saves more than a fraction α of the cheaper op. Here: `--pairs` consecutive op pairs of random
configs of a family's small space (seed 1, validation's draw), each op alone and the pair as one
``.pte``, timed hot (back to back, XNNPACK, 1 thread) in interleaved rounds. A pair's saving is
reported relative to min(T1, T2) and to T1 + T2. With no fusion the saving is one program call's
overhead (about 5 µs through the Python bindings, `tiny`).

    python experiments/executorch_tables/fusion.py --family efficientformer --pairs 30

Writes fusion-FAMILY.csv here and prints a summary (appended to fusion.md).
"""
from __future__ import annotations

import argparse
import datetime
import random
import statistics
from pathlib import Path

import torch

import search_spaces
from lut import backends, graph, measure
from nas.core import io
from supernets.config import SearchSpace
from supernets.registry import random_choice

HERE = Path(__file__).resolve().parent


class _Tiny(torch.nn.Module):
    """The least a program can do (ExecuTorch will not export a bare identity): one call's cost."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="efficientformer")
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.5)
    args = ap.parse_args(argv)
    space = SearchSpace.load(search_spaces.space_path(args.family, "small"))
    rng = random.Random(1)
    pairs, seen = [], set()
    while len(pairs) < args.pairs:
        ops = graph.ops(random_choice(space, rng).to_config(space, 10))
        for a, b in zip(ops, ops[1:]):
            if (a.key, b.key) not in seen and len(pairs) < args.pairs:
                seen.add((a.key, b.key))
                pairs.append((a, b))
    items, singles = [], {}
    for a, b in pairs:
        for op in (a, b):
            if op.key not in singles:
                singles[op.key] = (op.key, graph.deploy_module(op), op.in_shape)
        items.append((f"{a.key} + {b.key}", torch.nn.Sequential(graph.deploy_module(a), graph.deploy_module(b)),
                      a.in_shape))
    items = measure.prepare([*singles.values(), *items, ("tiny", _Tiny(), (1, 8, 4, 4))])
    runners = backends.runners(items, "executorch", threads=1)
    hot = measure.time_rounds(runners, num_threads=1, rounds=args.rounds, calls=9).hot
    rows = []
    for a, b in pairs:
        t1, t2, t12 = hot[a.key].ms, hot[b.key].ms, hot[f"{a.key} + {b.key}"].ms
        saved = t1 + t2 - t12
        rows.append({"first": a.key, "second": b.key, "t1_ms": round(t1, 4), "t2_ms": round(t2, 4),
                     "t12_ms": round(t12, 4), "saved_ms": round(saved, 4),
                     "saved_of_min_pct": round(100 * saved / min(t1, t2), 2),
                     "saved_of_sum_pct": round(100 * saved / (t1 + t2), 2),
                     "fused": saved > args.alpha * min(t1, t2)})
    io.write_csv(HERE / f"fusion-{args.family}.csv", rows)
    fused = sum(r["fused"] for r in rows)
    summary = (f"## {args.family} ({datetime.date.today()}): {len(rows)} consecutive pairs, α = {args.alpha}\n\n"
               f"    python experiments/executorch_tables/fusion.py --family {args.family} --pairs {args.pairs}\n\n"
               f"- fused by nn-Meter's test: **{fused} of {len(rows)}**;\n"
               f"- saving, median over pairs: {statistics.median(r['saved_ms'] for r in rows) * 1e3:.1f} µs, "
               f"{statistics.median(r['saved_of_sum_pct'] for r in rows):.1f} % of T1 + T2 "
               f"(p90 {sorted(r['saved_of_sum_pct'] for r in rows)[int(0.9 * (len(rows) - 1))]:.1f} %);\n"
               f"- one program call (a `.pte` that multiplies by 1): {hot['tiny'].ms * 1e3:.1f} µs.\n")
    with open(HERE / "fusion.md", "a") as f:
        f.write(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
