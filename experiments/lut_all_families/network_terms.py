"""Which network-level term closes the gap between a CPU table's per-op sum and a whole network?
(#32 part 0: the misses left after the per-family cache blend.)

Offline, on a build that `run.py` kept (its tables under runs/lut_all_families/build-*): for each
family, the calibration networks' measured times (stored in the table) fit each candidate, and the
candidate predicts the family's validation networks (the build's `<family>/validation.csv`,
measured times at the build's speed: measured / drift). Candidates:

- blend: hot + blend(W) * (cold - hot), the shipped model (`lut.build.fit_cache_model`);
- blend + k*B: plus k ms per MB of each op's 4D input and output (`lut.table.boundary_mb`), k of
  either sign: the activation traffic a network pays other than its ops timed alone do.

    python experiments/lut_all_families/network_terms.py runs/lut_all_families/build-3-2026-12-06
"""
from __future__ import annotations

import csv
import math
import random
import sys
from pathlib import Path

import numpy as np

import search_spaces
from lut import build, graph
from lut.table import LatencyTable, boundary_mb
from lut.validate import error_stats
from supernets import registry
from supernets.config import SearchSpace
from supernets.registry import random_choice

HERE = Path(__file__).resolve().parent


def _terms(table: LatencyTable, config) -> tuple[float, float, float, float]:
    keys = graph.keys(config)
    hot = sum(float(table.entries[k]["hot_ms"]) for k in keys)
    gap = sum(float(table.entries[k]["cold_ms"]) - float(table.entries[k]["hot_ms"]) for k in keys)
    return hot, gap, table.weight_bytes(config), sum(boundary_mb(graph.ops(config)))


def _fit(rows, y, with_b: bool):
    h, g, w, b = (np.array(c, dtype=float) for c in zip(*rows))
    x = np.log(w / 2**20)
    cols = [g / y, g * x / y] + ([b / y] if with_b else [])
    coef, *_ = np.linalg.lstsq(np.stack(cols, axis=1), 1 - h / y, rcond=None)
    lo, hi = x.min(), x.max()

    def predict(row):
        hh, gg, ww, bb = row
        xx = min(hi, max(lo, math.log(ww / 2**20)))
        blend = min(1.0, max(0.0, coef[0] + coef[1] * xx))
        return hh + blend * gg + (coef[2] * bb if with_b else 0.0)
    return predict, coef


def family(build_dir: Path, fam: str, device: str = "cpu", validations: Path = HERE) -> list[str]:
    space = SearchSpace.load(search_spaces.space_path(fam, "small"))
    table = LatencyTable.load(build_dir / f"{device}@{space.resolution}.yaml")
    cal = table.calibration(fam)
    spaces = [SearchSpace.from_dict(s) for s in cal["spaces"]]
    cal_cfgs = build.calibration_configs(spaces, cal["num_classes"], cal["samples"], cal["seed"], cal.get("draw", "uniform"))
    cal_rows = [_terms(table, c) for c in cal_cfgs.values()]
    cal_y = np.array([cal["measured_ms"][n] for n in cal_cfgs])
    with open(validations / fam / "validation.csv", newline="") as f:
        val = list(csv.DictReader(f))
    rng = random.Random(1)
    val_cfgs = [random_choice(space, rng).to_config(space, 10) for _ in val]
    drift = (1 + float(val[0]["drift_corrected_error_pct"]) / 100) / (1 + float(val[0]["error_pct"]) / 100)
    val_y = [float(r["measured_ms"]) / drift for r in val]
    val_rows = [_terms(table, c) for c in val_cfgs]
    out = []
    for label, with_b in (("blend", False), ("blend + k*B", True)):
        predict, coef = _fit(cal_rows, cal_y, with_b)
        cal_err = [100 * (predict(r) / y - 1) for r, y in zip(cal_rows, cal_y)]
        err = [100 * (predict(r) / y - 1) for r, y in zip(val_rows, val_y)]
        s = error_stats(err)
        out.append(f"| {fam} | {label} | {', '.join(f'{c:.4g}' for c in coef)} | "
                   f"{np.median(np.abs(cal_err)):.2f} | {s['median_abs_error_pct']:.2f} | {s['p95_abs_error_pct']:.2f} | "
                   f"{100 * s['within_5_pct']:.0f} | {100 * s['within_10_pct']:.0f} | {s['median_signed_error_pct']:+.2f} |")
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("tables", help="the directory of the build's tables")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--validations", default=str(HERE), help="where <family>/validation.csv of the build are")
    ap.add_argument("--families", default="all")
    args = ap.parse_args(argv)
    print("| family | model | coefficients (base, slope[, k ms/MB]) | calibration median % | validation median % "
          "| p95 % | ±5 % | ±10 % | signed % |\n|---|---|---|---|---|---|---|---|---|")
    for fam in registry.searchable_families(args.families):
        print("\n".join(family(Path(args.tables), fam, args.device, Path(args.validations))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
