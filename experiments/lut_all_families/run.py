"""CPU tables for every family: the wall time of ``nas lut build --device cpu --family all`` and
``nas lut validate`` of each family's space on the tables it built.

The build measures every op of the five spaces (two tables: 224 px for EfficientFormer, iFormer
and FMViT; 256 px for FastViT and MobileViTv3) and fits each table's cache model on calibration
networks drawn from its spaces. Each family is then validated on random configs of its own space
(seed != calibration seed), timed end to end in interleaved rounds with the table's calibration
networks, so the machine's drift since the build is reported too.

    python experiments/lut_all_families/run.py --samples 20 --rounds 5

Writes result.md here and, per family, validation.csv and scatter.png under <family>/.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import sys
import tempfile
import time
from pathlib import Path

from supernets import registry
from lut import store
from lut.table import LatencyTable
from lut.validate import error_stats

HERE = Path(__file__).resolve().parent


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tables:
        t0 = time.time()
        store.build_tables("cpu", registry.searchable_families(), tables_dir=tables, rounds=args.rounds,
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

    lines = [f"# CPU tables for all five families: build time and validation ({datetime.date.today()})", "",
             f"    python experiments/lut_all_families/run.py --samples {args.samples} --rounds {args.rounds}", "",
             f"`nas lut build --device cpu --family all --rounds {args.rounds}`: **{build_s:.0f} s wall** "
             f"on this machine (2 shared cores, 1 thread), "
             + "; ".join(f"{n}: {len(t.entries)} entries, " + ", ".join(
                 f"{fam} cache blend {t.cache_model(fam).base:.3f} {t.cache_model(fam).slope:+.3f}·ln(W/MiB), "
                 f"calibration median |err| {cal['median_abs_error_pct']:.2f} %"
                 for fam, cal in t.environment["calibrations"].items()) for n, t in built.items())
             + ".", "",
             f"Then `nas lut validate --device cpu --family F --samples {args.samples}` on those tables. Goal: median "
             "|err| ≤ 3 %, ≥ 95 % within ±10 %. *raw*: prediction vs measured now; *at build speed*: measured divided "
             "by the machine's drift since the build (the table's calibration networks re-timed in the same rounds).",
             "", "| family | validate s | drift | raw median % | raw p95 % | raw within ±10 % | raw signed % | "
             "build-speed median % | p95 % | within ±10 % | signed % |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam, (rows, secs) in results.items():
        raw = error_stats([float(r["error_pct"]) for r in rows])
        cor = error_stats([float(r["drift_corrected_error_pct"]) for r in rows])
        # corrected = pred / (measured / drift) - 1 and raw = pred / measured - 1
        drift = (1 + float(rows[0]["drift_corrected_error_pct"]) / 100) / (1 + float(rows[0]["error_pct"]) / 100)
        cells = lambda s: (f"{s['median_abs_error_pct']:.2f} | {s['p95_abs_error_pct']:.2f} | "  # noqa: E731
                           f"{100 * s['within_10_pct']:.0f} | {s['median_signed_error_pct']:+.2f}")
        lines.append(f"| {fam} | {secs:.0f} | {drift:.3f} | {cells(raw)} | {cells(cor)} |")
    lines += ["", "Scatter plots: `<family>/scatter.png`; every config: `<family>/validation.csv`.", ""]
    (HERE / "result.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run())
