"""Predicted (sum of cache-cold op timings from the table) vs measured end-to-end CPU latency
for random configs of a family's space.

    python experiments/lut_fidelity/run.py --samples 30
"""
from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
from pathlib import Path

import search_spaces
from lut import build
from supernets.config import IDENTITY, Choice, SearchSpace
from supernets.registry import get_family

HERE = Path(__file__).resolve().parent


def random_choice(space: SearchSpace, rng: random.Random, token_kinds: set[str]) -> Choice:
    widths, kinds = [], []
    for j, s in enumerate(space.stages):
        widths.append(rng.choice(space.widths(j)))
        n = rng.randint(s.min_blocks, s.slots)
        non_id = [k for k in s.choices if k != IDENTITY]
        maps = [k for k in non_id if k not in token_kinds]
        toks = [k for k in non_id if k in token_kinds]
        n_tok = rng.randint(0, n) if toks else 0
        row = [rng.choice(maps) for _ in range(n - n_tok)] + [rng.choice(toks) for _ in range(n_tok)]
        kinds.append(tuple(row) + (IDENTITY,) * (s.slots - n))
    return Choice(tuple(widths), tuple(kinds))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="efficientformer")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)

    space = SearchSpace.load(search_spaces.space_path(args.family))
    fam = get_family(args.family)
    rng = random.Random(args.seed)
    configs = {f"c{i:02d}": random_choice(space, rng, set(fam.token_kinds)).to_config(space, 1000)
               for i in range(args.samples)}
    table = build.new_table("cpu", space.resolution, 1)
    build.fill(table, build.ops_for(configs.values()), rounds=args.rounds, save=False, desc="ops")
    measured = build.measure_models(configs, rounds=args.rounds)
    rows = []
    for name, cfg in configs.items():
        p, m = table.predict(cfg), measured[name].ms
        rows.append({"config": name, "predicted_ms": round(p, 3), "measured_ms": round(m, 3),
                     "error_pct": round(100 * (p - m) / m, 2), "summary": cfg.summary()})
    errs = sorted(abs(r["error_pct"]) for r in rows)
    median = statistics.median(errs)
    p95 = errs[min(len(errs) - 1, int(round(0.95 * (len(errs) - 1))))]
    within = sum(e <= 10 for e in errs) / len(errs)
    signed = statistics.median(r["error_pct"] for r in rows)

    out = Path(args.out)
    with open(out / "result.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.6), dpi=110)
    xs, ys = [r["measured_ms"] for r in rows], [r["predicted_ms"] for r in rows]
    lo, hi = min(xs + ys) * 0.9, max(xs + ys) * 1.1
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="gray", alpha=0.15, label="±10%")
    ax.scatter(xs, ys, s=14)
    ax.set_xlabel("measured end-to-end (ms)")
    ax.set_ylabel("predicted from table (ms)")
    ax.set_title(f"{args.family} @ cpu{space.resolution}, 1 thread", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scatter.png")
    summary = (f"samples {len(rows)}  median |err| {median:.2f}%  p95 |err| {p95:.2f}%  "
               f"within ±10%: {100 * within:.0f}%  median signed err {signed:+.2f}%")
    print(summary)
    with open(out / "result.md", "w") as f:
        f.write("# LUT fidelity: predicted vs measured CPU latency\n\n")
        f.write(f"    python experiments/lut_fidelity/run.py --family {args.family} --samples {args.samples} "
                f"--seed {args.seed}\n\n")
        f.write(f"Environment: {build.new_table('cpu', space.resolution, 1).environment}\n\n")
        f.write(f"**{summary}**\n\n")
        f.write("| config | predicted ms | measured ms | error % | blocks |\n|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['config']} | {r['predicted_ms']} | {r['measured_ms']} | {r['error_pct']:+.2f} | {r['summary']} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
