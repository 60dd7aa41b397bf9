"""Slimming (EfficientFormer §4.2) vs Optuna NSGA-II search on the same supernet and table.

One supernet (``nas train-supernet --family F``, embedded digits) and one latency table (the
shipped, deterministic ``iphone12`` estimates by default, so timing noise cannot favour either
method). For each target (fractions of the supernet's initial choice): ``nas slim`` and
``nas search --trials N``, each timed wall-clock; the table compares the slimmed config's
inherited accuracy with the most accurate search trial within the budget. Both evaluate
accuracy identically (same BN-recalibration and validation subsets, same seed).

    python experiments/slim_vs_search/run.py --family efficientformer --epochs 3 --trials 100
"""
from __future__ import annotations

import argparse
import csv
import datetime
import sys
import tempfile
import time
from pathlib import Path

from nas import runs as runs_mod
from nas.session import SupernetSession
from nas.train import supernet_recipe, train_supernet_run
from supernets.config import ArchConfig

HERE = Path(__file__).resolve().parent


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="efficientformer")
    ap.add_argument("--device", default="iphone12")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--target-fraction", type=float, action="append")
    args = ap.parse_args(argv)
    fractions = args.target_fraction or [0.85, 0.7, 0.55]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        t0 = time.time()
        ckpt = train_supernet_run(supernet_recipe(family=args.family, epochs=args.epochs),
                                  runs_mod.new_run_dir(runs, args.family), progress=False, log=lambda line: None)
        train_s = time.time() - t0
        # one session for both methods: same table, BN-recalibration and validation subsets
        session = SupernetSession.open(supernet=ckpt, device=args.device, runs_dir=runs, progress=False)
        # the start: slimming to a huge target takes no step and reports the initial choice
        (start,) = session.slim([1000], ckpt.parent / "slim").configs
        start = ArchConfig.load(start)
        start_ms, start_acc = start.meta["predicted_ms"], start.meta["inherited_top1"]
        for frac in fractions:
            target = round(frac * start_ms, 3)
            t1 = time.time()
            (slimmed,) = session.slim([target], ckpt.parent / "slim").configs
            slim_s = time.time() - t1
            slimmed = ArchConfig.load(slimmed)
            t2 = time.time()
            found = session.search([target], trials=args.trials, progress=False, log=lambda line: None)
            search_s = time.time() - t2
            trials = list(csv.DictReader(open(found.out_dir / "trials.csv")))
            feasible = [r for r in trials if r["feasible"] == "True"]
            best = max(feasible, key=lambda r: (float(r["accuracy"]), -float(r["latency_ms"])), default=None)
            # how many trials the search needed to first match the slimmed accuracy within budget
            matched = next((int(r["trial"]) + 1 for r in sorted(trials, key=lambda r: int(r["trial"]))
                            if r["feasible"] == "True" and float(r["accuracy"]) >= slimmed.meta["inherited_top1"]), None)
            rows.append((frac, target, slimmed, slim_s, best, search_s, len(feasible), len(trials), matched))
    lines = [f"# Slimming vs Optuna search ({args.family} on {args.device}, {datetime.date.today()})", "",
             f"    python experiments/slim_vs_search/run.py --family {args.family} --device {args.device} "
             f"--epochs {args.epochs} --trials {args.trials}", "",
             f"Supernet: {args.epochs} epochs on the embedded digits ({train_s:.0f} s); initial choice "
             f"{start_ms:.3f} ms, {start_acc:.2f} % inherited top-1. Accuracy is the inherited top-1 on the fixed "
             "validation subset (`--val-images 1000`, i.e. the whole 360-image digits validation split) after BN recalibration (same for both). Times are wall-clock on 2 shared "
             "cores, of the slimming or search alone (one session, opened once, serves both).", "",
             "| target | slim: top-1 % | ms | steps | time s | search: best top-1 % in budget | ms | feasible / trials "
             "| time s | trials to match slim |", "|---|---|---|---|---|---|---|---|---|---|"]
    for frac, target, s, slim_s, best, search_s, n_feasible, n_trials, matched in rows:
        b = (f"{float(best['accuracy']):.2f} | {float(best['latency_ms']):.3f}" if best else "none | -")
        lines.append(f"| {target:g} ms ({frac:g}x) | {s.meta['inherited_top1']:.2f} | {s.meta['predicted_ms']:.3f} | "
                     f"{s.meta['steps']} | {slim_s:.0f} | {b} | {n_feasible} / {n_trials} | {search_s:.0f} | "
                     f"{matched if matched else 'never'} |")
    (HERE / "result.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run())
