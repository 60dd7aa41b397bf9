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
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from supernets import registry
from lut import store
from lut.table import LatencyTable
from lut.validate import error_stats
from nas.core import io

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--space", default="small", help="the shipped spaces the tables cover (small, paper, all); "
                    "validation draws from each family's small space")
    ap.add_argument("--fresh", action="store_true", help="forget the builds recorded in runs.json")
    ap.add_argument("--report-only", action="store_true", help="rewrite result.md from runs.json")
    args = ap.parse_args(argv)
    runs_path = HERE / "runs.json"
    runs = [] if args.fresh or not runs_path.is_file() else json.loads(runs_path.read_text())
    if args.report_only:
        return report(runs)
    # each build's tables are kept (runs/ is not committed) so that a miss can be analysed afterwards
    tables = REPO / "runs" / "lut_all_families" / f"build-{len(runs) + 1}-{datetime.date.today()}"
    shutil.rmtree(tables, ignore_errors=True)   # a build cut short: start it again, every op timed afresh
    tables.mkdir(parents=True)
    t0 = time.time()
    store.build_tables("cpu", registry.searchable_families(), space=args.space, tables_dir=tables, rounds=args.rounds,
                       progress=False)
    build_s = time.time() - t0
    built = {p.name: LatencyTable.load(p) for p in sorted(Path(tables).glob("cpu@*.yaml"))}
    results = {}
    for fam in registry.searchable_families():
        t1 = time.time()
        # in a process of its own, as a user runs `nas lut validate`: in the process that has just
        # built the tables, networks ran 1.2x slower (1.24x here, 1.01x in a fresh process, the
        # same table and configs, 2026-12-06) and every raw figure of builds 1-4 carried that
        subprocess.run([sys.executable, "-m", "nas.cli", "lut", "validate", "--device", "cpu", "--family", fam,
                        "--space", "small", "--samples", str(args.samples), "--seed", str(args.seed),
                        "--rounds", str(args.rounds), "--tables", str(tables), "--out", str(HERE / fam),
                        "--no-progress"], check=True)
        with open(HERE / fam / "validation.csv") as f:
            rows = list(csv.DictReader(f))
        results[fam] = (rows, time.time() - t1)

    from scipy.stats import spearmanr

    families = {}
    for fam, (rows, secs) in results.items():
        pred, meas = [float(r["predicted_ms"]) for r in rows], [float(r["measured_ms"]) for r in rows]
        # corrected = pred / (measured at build speed) - 1 and raw = pred / measured - 1; the drift
        # is taken out round by round (`lut.validate`), so each config has its own: their median
        drift = statistics.median((1 + float(r["drift_corrected_error_pct"]) / 100) / (1 + float(r["error_pct"]) / 100)
                                  for r in rows)
        spread = [float(r["round_spread_pct"]) for r in rows if r.get("round_spread_pct")]
        families[fam] = {"validate_s": round(secs), "drift": round(drift, 4),
                         **({"round_spread_pct": round(statistics.median(spread), 2)} if spread else {}),
                         "raw": error_stats([float(r["error_pct"]) for r in rows]),
                         "corrected": error_stats([float(r["drift_corrected_error_pct"]) for r in rows]),
                         "spearman": float(spearmanr(pred, meas)[0])}
    runs.append({"date": str(datetime.date.today()), "space": args.space, "samples": args.samples, "rounds": args.rounds,
                 "validated_in": "a process of its own", "drift_taken_out": "round by round",
                 "build_s": round(build_s), "tables": {n: {"entries": len(t.entries), "calibrations": {
                     fam: {"blend": [round(t.cache_model(fam).base, 4), round(t.cache_model(fam).slope, 4)],
                           "median_abs_error_pct": cal["median_abs_error_pct"], "draw": cal.get("draw", "uniform")}
                     for fam, cal in t.environment["calibrations"].items()}} for n, t in built.items()},
                 "families": families})
    io.write_text(runs_path, json.dumps(runs, indent=1))
    return report(runs)


def report(runs: list[dict]) -> int:
    lines = [f"# CPU tables for all five families: builds and validations (last {runs[-1]['date']})", "",
             "    python experiments/lut_all_families/run.py --samples 20 --rounds 7   # one more build", "",
             "Each build: `nas lut build --device cpu --family all`, then `nas lut validate --device cpu --family F` "
             "on the tables it built, random configs of each family's space. Goal (#32): median |err| ≤ 3 %, ≥ 95 % "
             "within ±10 %, in two separate builds. *raw*: prediction vs measured now; *at build speed*: measured "
             "divided by the machine's drift since the build (the table's calibration networks re-timed in the same "
             "rounds; from build 4 on, spread through each round and taken out round by round, `lut.validate`). "
             "Every build recorded is in `runs.json`. *round spread*: the median over the validation networks of "
             "their time's standard deviation across rounds, how much the host moved them while they were timed "
             "(recorded from build 7 on)."]
    for i, run_ in enumerate(runs, 1):
        lines += ["", f"## Build {i} ({run_['date']}, {run_.get('space', 'small')} spaces, {run_['samples']} configs per family, "
                  f"--rounds {run_['rounds']})",
                  "", f"Validated in {run_.get('validated_in', 'the building process')}, drift taken out "
                  f"{run_.get('drift_taken_out', 'over the whole validation')}. "
                  f"Build: **{run_['build_s']} s wall** (2 shared cores, 1 thread); "
                  + "; ".join(f"{n}: {t['entries']} entries, calibration networks drawn "
                              f"{next(iter(t['calibrations'].values())).get('draw', 'uniform')} "
                              "(`lut.build.CALIBRATION_DRAWS`), calibration median |err| " + ", ".join(
                      f"{fam} {c['median_abs_error_pct']:.2f} %" for fam, c in t["calibrations"].items())
                      for n, t in run_["tables"].items()) + ".", "",
                  "| family | validate s | drift | round spread % | raw median % | p95 % | ±5 % | ±10 % | signed % | "
                  "Spearman | build-speed median % | p95 % | ±5 % | ±10 % | signed % | goal |", "|" + "---|" * 17]
        cells = lambda s: (f"{s['median_abs_error_pct']:.2f} | {s['p95_abs_error_pct']:.2f} | "  # noqa: E731
                           f"{100 * s['within_5_pct']:.0f} | {100 * s['within_10_pct']:.0f} | "
                           f"{s['median_signed_error_pct']:+.2f}")
        for fam, r in run_["families"].items():
            met = ["met" if s["median_abs_error_pct"] <= 3 and s["within_10_pct"] >= 0.95 else "missed"
                   for s in (r["raw"], r["corrected"])]
            lines.append(f"| {fam} | {r['validate_s']} | {r['drift']:.3f} | {r.get('round_spread_pct', '–')} | "
                         f"{cells(r['raw'])} | {r['spearman']:.3f} | "
                         f"{cells(r['corrected'])} | raw {met[0]}, at build speed {met[1]} |")
    lines += ["", "Scatter plots of the last build: `<family>/scatter.png`; its configs: `<family>/validation.csv`.", "",
              "## What the builds say (2026-12-06)", "",
              "- **The validating process, not the table, made the raw misses of builds 1–4 on the 224 px table.** "
              "Validated in the process that had just built the tables, networks ran 1.2x slower than when the "
              "same process built them (drift 1.22–1.26 in builds 1, 3 and 4). Build 4's 224 px table validated "
              "again on EfficientFormer in a fresh process (`nas lut validate --device cpu --family efficientformer "
              "--space small --samples 20 --rounds 5 --tables <build 4>`): drift 1.011, raw median 3.02 %, 95 % "
              "within ±10 %. From build 5 on, each family is validated in a process of its own, as a user runs it.",
              "- **Drift taken out round by round** (from build 4): a shared host changes speed between rounds; one "
              "drift for a whole validation left configs that caught one fast round 10–20 % off (build 3's "
              "EfficientFormer: p95 18 % at build speed). Build 4, the first with it: every family within the goal at "
              "build speed.",
              "- **Builds 5–7 were timed while the host was busy**: the worst family's calibration median was "
              "3.8–4.5 % (build 4: 1.8 %), single calibration networks were off by up to 16–21 % inside the build "
              "(the build logs), and validation ranked networks worse "
              "(Spearman 0.68–0.90 against 0.93–0.99 in quiet builds). MobileViTv3's build-5 table priced its "
              "networks ~40 % above build 4's, for the same configs. In build 7 the validations themselves were "
              "quiet (networks moved 1.6–4.2 % between rounds) and FastViT still missed by 8 % at build speed: the "
              "noise was in the build's op timings. Those figures are the host's, not a change to the tables; "
              "`nas lut validate` now prints how far a network's time moved between rounds, so a reader can tell "
              "a noisy validation from a noisy build. Part of what builds 5–8 show for the 256 px families is not the "
              "host but the allocator (next point).",
              "- **The allocator made the 256 px families miss when validated in a process of their own** (builds "
              "5–8; found after build 8). "
              "Build 4's FastViT table, 1.6 % validated in the process that built it, validated at 11.8 % (Spearman "
              "0.87) in a fresh process, on the same table; in a fresh process with glibc told to serve tensors up "
              "to 32 MB from its heap and keep freed memory (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`), "
              "at 3.0 % (0.96), and its networks ran 20 % faster. glibc's defaults map a large activation fresh "
              "and give it back when freed, so every forward pass pays page faults in proportion to its "
              "activations, until the process has seen tensors that large; a process that has built a table has. "
              "`lut.measure.steady_allocator` now sets both in every timing run (build, validate, slim's on-demand "
              "ops). Build 9, the first with it: every family within the goal at build speed (2.9, 2.9, 2.1, 1.2 "
              "and 1.8 %, 100 % within ±10 %, Spearman 0.96–0.99), as build 4 was. Raw, only iFormer is: the "
              "networks ran at 0.80–0.99x their build-time latency in the validating processes, alike for every "
              "config of a family (hence Spearman ≥ 0.96): the building process, as the next point shows.",
              "- **The building process ran networks slower than a user's process** (found after build 9, "
              "`process_state.md`). One process timed the same networks fresh, after timing the 224 px table's "
              "1014 ops, after a garbage collection and a `malloc_trim`, inside the 256 px table's rounds and "
              "after them: up to 14 % slower once it had timed the ops, and it stayed so; a new process was back "
              "at 0.93–1.04x. The blend was fitted on those slow timings and priced fresh-process networks high "
              "(build 9: FastViT +19 %, MobileViTv3 +26 %). Since build 10 a table's calibration networks, and "
              "`nas lut validate`'s, run in a worker process forked from a forkserver, timed in the same rounds as "
              "the ops (`lut.measure.NetworksApart`). Build 10: drift 0.97–1.08 (build 9: 0.80–0.99), four "
              "families within the goal raw and all five at build speed; MobileViTv3 missed raw at 5.8 % in a "
              "validation whose networks moved 6.9 % between rounds (a busy host: drift 1.08), 2.5 % at build "
              "speed. Build 11: drift 0.985–1.012, every family within the goal raw (1.2, 1.2, 0.7, 1.3 and 2.2 %, "
              "100 % within ±10 %, Spearman 0.98–1.00) and at build speed: the two separate builds #32 asks for, "
              "raw in build 11 and at build speed in both.",
              "- A per-MB activation term, as the XNNPACK tables need, does not help the CPU tables "
              "(`network_terms.md`).", ""]
    io.write_text(HERE / "result.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run())
