"""CPU tables for every family: the wall time of ``nas lut build --device cpu --family all`` and
``nas lut validate`` of each family's space on the tables it built.

The build measures every op of the five spaces (two tables: 224 px for EfficientFormer, iFormer
and FMViT; 256 px for FastViT and MobileViTv3) and fits each table's cache model on calibration
networks drawn from its spaces. Each family is then validated on random configs of its own space
(seed != calibration seed), timed end to end in interleaved rounds with the table's calibration
networks, so the machine's drift since the build is reported too.

    python experiments/lut_all_families/run.py --samples 20 --rounds 5     # once per build

Each run is one build and its validations, appended to runs.json (``--fresh`` starts over): #32
asks for the goal in two separate builds. Writes result.md (every recorded build) here and, per
family, the last build's validation.csv and scatter.png under <family>/.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

from supernets import registry
from lut import store
from lut.table import LatencyTable
from lut.validate import error_stats
from nas.core import io

HERE = Path(__file__).resolve().parent


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--space", default="small", help="the shipped spaces the tables cover (small, paper, all); "
                    "validation draws from each family's small space")
    ap.add_argument("--fresh", action="store_true", help="forget the builds recorded in runs.json")
    args = ap.parse_args(argv)
    runs_path = HERE / "runs.json"
    runs = [] if args.fresh or not runs_path.is_file() else json.loads(runs_path.read_text())
    with tempfile.TemporaryDirectory() as tables:
        t0 = time.time()
        store.build_tables("cpu", registry.searchable_families(), space=args.space, tables_dir=tables, rounds=args.rounds,
                           progress=False)
        build_s = time.time() - t0
        built = {p.name: LatencyTable.load(p) for p in sorted(Path(tables).glob("cpu@*.yaml"))}
        results = {}
        for fam in registry.searchable_families():
            t1 = time.time()
            store.validate_tables("cpu", [fam], samples=args.samples, seed=args.seed, rounds=args.rounds,
                                  tables_dir=tables, out_dir=HERE / fam, progress=False)
            with open(HERE / fam / "validation.csv") as f:
                rows = list(csv.DictReader(f))
            results[fam] = (rows, time.time() - t1)

    from scipy.stats import spearmanr

    families = {}
    for fam, (rows, secs) in results.items():
        pred, meas = [float(r["predicted_ms"]) for r in rows], [float(r["measured_ms"]) for r in rows]
        # corrected = pred / (measured / drift) - 1 and raw = pred / measured - 1
        drift = (1 + float(rows[0]["drift_corrected_error_pct"]) / 100) / (1 + float(rows[0]["error_pct"]) / 100)
        families[fam] = {"validate_s": round(secs), "drift": round(drift, 4),
                         "raw": error_stats([float(r["error_pct"]) for r in rows]),
                         "corrected": error_stats([float(r["drift_corrected_error_pct"]) for r in rows]),
                         "spearman": float(spearmanr(pred, meas)[0])}
    runs.append({"date": str(datetime.date.today()), "space": args.space, "samples": args.samples, "rounds": args.rounds,
                 "build_s": round(build_s), "tables": {n: {"entries": len(t.entries), "calibrations": {
                     fam: {"blend": [round(t.cache_model(fam).base, 4), round(t.cache_model(fam).slope, 4)],
                           "median_abs_error_pct": cal["median_abs_error_pct"], "draw": cal.get("draw", "uniform")}
                     for fam, cal in t.environment["calibrations"].items()}} for n, t in built.items()},
                 "families": families})
    io.write_text(runs_path, json.dumps(runs, indent=1))
    lines = [f"# CPU tables for all five families: builds and validations (last {runs[-1]['date']})", "",
             f"    python experiments/lut_all_families/run.py --samples {args.samples} --rounds {args.rounds}", "",
             "Each build: `nas lut build --device cpu --family all`, then `nas lut validate --device cpu --family F` "
             "on the tables it built, random configs of each family's space. Goal (#32): median |err| ≤ 3 %, ≥ 95 % "
             "within ±10 %, in two separate builds. *raw*: prediction vs measured now; *at build speed*: measured "
             "divided by the machine's drift since the build (the table's calibration networks re-timed in the same "
             "rounds). Every build recorded is in `runs.json`."]
    for i, run_ in enumerate(runs, 1):
        lines += ["", f"## Build {i} ({run_['date']}, {run_.get('space', 'small')} spaces, {run_['samples']} configs per family, "
                  f"--rounds {run_['rounds']})",
                  "", f"Build: **{run_['build_s']} s wall** (2 shared cores, 1 thread); "
                  + "; ".join(f"{n}: {t['entries']} entries, calibration networks drawn "
                              f"{next(iter(t['calibrations'].values())).get('draw', 'uniform')} "
                              "(`lut.build.CALIBRATION_DRAWS`), calibration median |err| " + ", ".join(
                      f"{fam} {c['median_abs_error_pct']:.2f} %" for fam, c in t["calibrations"].items())
                      for n, t in run_["tables"].items()) + ".", "",
                  "| family | validate s | drift | raw median % | p95 % | ±5 % | ±10 % | signed % | Spearman | "
                  "build-speed median % | p95 % | ±5 % | ±10 % | signed % | goal |", "|" + "---|" * 16]
        cells = lambda s: (f"{s['median_abs_error_pct']:.2f} | {s['p95_abs_error_pct']:.2f} | "  # noqa: E731
                           f"{100 * s['within_5_pct']:.0f} | {100 * s['within_10_pct']:.0f} | "
                           f"{s['median_signed_error_pct']:+.2f}")
        for fam, r in run_["families"].items():
            met = r["raw"]["median_abs_error_pct"] <= 3 and r["raw"]["within_10_pct"] >= 0.95
            lines.append(f"| {fam} | {r['validate_s']} | {r['drift']:.3f} | {cells(r['raw'])} | {r['spearman']:.3f} | "
                         f"{cells(r['corrected'])} | {'met' if met else 'missed'} (raw) |")
    lines += ["", "Scatter plots of the last build: `<family>/scatter.png`; its configs: `<family>/validation.csv`.", ""]
    io.write_text(HERE / "result.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run())
