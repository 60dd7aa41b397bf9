"""LUT fidelity: does a freshly built CPU table predict whole networks?

Runs the user's pipeline, `--repeats` times from scratch: ``nas lut build`` (every op of the
family's space, cold and hot, plus the cache-model calibration on 12 networks timed in the same
rounds) into a scratch tables directory, then ``nas lut validate`` on N random configs drawn with
another seed per repeat (never a calibration network). Repeats show how much of the error is the
shared machine: the same code gives different figures minutes apart. Writes result.md, and the
CSV and scatter plot of the last repeat, here.

    python experiments/lut_fidelity/run.py --family efficientformer --samples 30 --repeats 3
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lut import store
from lut.table import LatencyTable
from lut.validate import error_stats

HERE = Path(__file__).resolve().parent


def _cells(st: dict[str, float]) -> str:
    return (f"{st['median_abs_error_pct']:.2f} | {st['p95_abs_error_pct']:.2f} | {100 * st['within_10_pct']:.0f} | "
            f"{st['median_signed_error_pct']:+.2f}")


def one_repeat(args, seed: int, out: Path) -> dict:
    with tempfile.TemporaryDirectory() as tables:
        t0 = time.time()
        store.build_tables("cpu", [args.family], tables_dir=tables, rounds=args.rounds, progress=False)
        built = time.time()
        store.validate_tables("cpu", [args.family], samples=args.samples, seed=seed, rounds=args.rounds,
                              tables_dir=tables, out_dir=out, progress=False)
        table = LatencyTable.load(next(Path(tables).glob("cpu@*.yaml")))
    with open(out / "validation.csv") as f:
        rows = list(csv.DictReader(f))
    return {"seed": seed, "build_s": built - t0, "validate_s": time.time() - built, "table": table, "rows": rows,
            "raw": error_stats([float(r["error_pct"]) for r in rows]),
            "corrected": error_stats([float(r["drift_corrected_error_pct"]) for r in rows])}


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="efficientformer")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1, help="validation seed of the first repeat (+1 per repeat)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)
    out = Path(args.out)
    reps = [one_repeat(args, args.seed + i, out) for i in range(args.repeats)]

    last = reps[-1]["table"]
    env = {k: v for k, v in last.environment.items() if k != "calibrations"}
    lines = [
        "# LUT fidelity: predicted vs measured CPU latency",
        "",
        f"    python experiments/lut_fidelity/run.py --family {args.family} --samples {args.samples} "
        f"--repeats {args.repeats} --seed {args.seed} --rounds {args.rounds}",
        "",
        f"Each repeat builds a fresh table with `nas lut build` ({len(last.entries)} ops of the space + the "
        "cache-model calibration) and validates it right after with `nas lut validate` on "
        f"{args.samples} random configs (a different seed per repeat; never a calibration network).",
        f"Environment: `{env}`",
        "",
        "Goal: median |err| ≤ 3 %, ≥ 95 % of configs within ±10 %. *raw* = table prediction vs measured "
        "minutes later; *at build speed* = the measured time divided by the machine's drift since the "
        "build (the table's calibration networks re-timed in the same rounds as the samples).",
        "",
        "| repeat | build s | validate s | cache blend | calib. median % | drift | raw median % | raw p95 % "
        "| raw within ±10 % | raw signed % | build-speed median % | p95 % | within ±10 % | signed % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(reps):
        m, cal = r["table"].cache_model(args.family), r["table"].calibration(args.family)
        drift = statistics.median(float(x["measured_ms"]) / float(x["predicted_ms"]) *
                                  (1 + float(x["drift_corrected_error_pct"]) / 100) for x in r["rows"])
        lines.append(f"| {i + 1} (seed {r['seed']}) | {r['build_s']:.0f} | {r['validate_s']:.0f} | "
                     f"{m.base:.3f} {m.slope:+.3f}·ln(W/MiB) | {cal['median_abs_error_pct']:.2f} | {drift:.3f} | "
                     f"{_cells(r['raw'])} | {_cells(r['corrected'])} |")
    pooled_raw = error_stats([float(x["error_pct"]) for r in reps for x in r["rows"]])
    lines += ["", f"**Pooled over {sum(len(r['rows']) for r in reps)} configs (raw): median |err| "
              f"{pooled_raw['median_abs_error_pct']:.2f} %, p95 {pooled_raw['p95_abs_error_pct']:.2f} %, within ±10 %: "
              f"{100 * pooled_raw['within_10_pct']:.0f} %.**", "",
              f"Last repeat (seed {reps[-1]['seed']}): `validation.csv`, scatter plot below.", "",
              "![scatter](scatter.png)", "",
              "| config | predicted ms | measured ms | error % | at build speed % | blocks |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {x['config']} | {x['predicted_ms']} | {x['measured_ms']} | {float(x['error_pct']):+.2f} | "
              f"{float(x['drift_corrected_error_pct']):+.2f} | {x['summary']} |" for x in reps[-1]["rows"]]
    (out / "result.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'result.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
