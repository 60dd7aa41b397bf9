"""Does the building process time networks slower than a fresh process? (#32 part 0)

Build 9's tables priced networks timed in fresh validating processes 1-26 % high (FastViT and
MobileViTv3 at 256 px by ~20 %, the 224 px families by 1-9 %), alike across a family's configs,
while the same tables met the goal once each validation's calibration networks set the speed.
This times one set of networks (each family's calibration draw) at every stage of a build, in one
process, and once more in a fresh process:

    fresh         the process has timed nothing yet
    after 224     after timing every op of the small spaces at 224 px (the first table a build fills)
    after gc      then after a full garbage collection
    after trim    then after glibc's malloc_trim(0) (gives the heap's free pages back)
    in build      inside the 256 px table's rounds, next to its ops, as a build times its networks
                  (since lut.measure.NetworksApart: in the build's worker process)
    after build   after both
    new process   a fresh process again, after everything

    python experiments/lut_all_families/process_state.py [--rounds 3] [--samples 4]

Writes process_state.json (the timings), process_state.csv and appends a dated section to process_state.md.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime as dt
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lut import build, measure, store  # noqa: E402
from nas.core import io  # noqa: E402

HERE = Path(__file__).resolve().parent
FAMILIES = ("efficientformer", "fmvit", "iformer", "fastvit", "mobilevitv3")
STAGES = ("fresh", "after 224", "after gc", "after trim", "in build", "after build", "new process")


def networks(samples: int) -> dict:
    """Each family's calibration draw (the build's), at the resolution its table deploys at."""
    out = {}
    for res, spaces in store.spaces_at(FAMILIES, None, None, "small").items():
        for sp in spaces:
            for name, cfg in build.calibration_configs([sp], 10, samples, 0).items():
                out[f"{sp.family}:{name}"] = cfg
    return out


def time_networks(configs: dict, rounds: int, here: bool = False) -> dict[str, float]:
    """Each network's time: in a worker process (as `nas lut validate` and a build time networks
    since `lut.measure.NetworksApart`), or with `here` in this process (as they were before)."""
    if here:
        timed = measure.time_rounds([], build._model_items(configs), rounds=rounds).models
    else:
        timed = build.measure_models(configs, rounds=rounds, progress=None)
    return {n: t.ms for n, t in timed.items()}


def child(samples: int, rounds: int, here: bool) -> None:
    print(json.dumps(time_networks(networks(samples), rounds, here)))


def run(args) -> dict[str, dict[str, float]]:
    configs = networks(args.samples)
    at = {}
    t0 = time.time()
    at["fresh"] = time_networks(configs, args.rounds, args.here)
    print(f"fresh: {time.time() - t0:.0f}s", flush=True)
    by_res = store.spaces_at(FAMILIES, None, None, "small")
    with tempfile.TemporaryDirectory() as tmp:
        for res in sorted(by_res):
            table = build.new_table("cpu", res, 1)
            table.path = Path(tmp) / f"cpu@{res}.yaml"
            ops = store.ops_of(by_res[res], 10)
            if res == 224:
                build.fill(table, ops, rounds=1, save=False, progress=False)
                at["after 224"] = time_networks(configs, args.rounds, args.here)
                print(f"after 224 ({len(ops)} ops): {time.time() - t0:.0f}s", flush=True)
                gc.collect()
                at["after gc"] = time_networks(configs, args.rounds, args.here)
                ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
                at["after trim"] = time_networks(configs, args.rounds, args.here)
                print(f"after gc, trim: {time.time() - t0:.0f}s", flush=True)
            else:
                # the networks timed inside the table's rounds, as `build.calibrate` times them
                cal = {n: c for n, c in configs.items() if c.resolution == res}
                fitted = build.fill(table, ops, calibration=cal, rounds=args.rounds, save=False, progress=False)
                at["in build"] = {f"{fam}:{n}": ms for fam, c in fitted.items() for n, ms in c.measured_ms.items()}
                print(f"in build ({len(ops)} ops, {len(cal)} networks): {time.time() - t0:.0f}s", flush=True)
    at["after build"] = time_networks(configs, args.rounds, args.here)
    out = subprocess.run([sys.executable, __file__, "--child", "--samples", str(args.samples),
                          "--rounds", str(args.rounds)] + ["--here"] * args.here, check=True, capture_output=True, text=True).stdout
    at["new process"] = json.loads(out.strip().splitlines()[-1])
    print(f"new process: {time.time() - t0:.0f}s", flush=True)
    return at


def report(at: dict[str, dict[str, float]], args) -> None:
    configs = networks(args.samples)
    names = list(at["fresh"])
    rows = [{"network": n, **{s: round(at[s][n], 4) for s in STAGES if n in at.get(s, {})}} for n in names]
    io.write_csv(HERE / "process_state.csv", rows, ["network", *STAGES])
    where = ("in this process (in build: the build's own worker)" if args.here else
             "each timing in a worker process (`lut.measure.NetworksApart`; in build: the build's own worker)")
    lines = [f"\n## {dt.date.today()}: {args.samples} networks per family, {args.rounds} rounds per timing, "
             f"networks timed {where}\n",
             "Median over a family's networks of (time at the stage / time in the fresh process):\n",
             "| family | res | " + " | ".join(STAGES[1:]) + " |", "|---|---|" + "---|" * (len(STAGES) - 1)]
    for fam in FAMILIES:
        mine = [n for n in names if n.startswith(fam + ":")]
        cells = []
        for s in STAGES[1:]:
            have = [n for n in mine if n in at.get(s, {})]
            cells.append(f"{statistics.median(at[s][n] / at['fresh'][n] for n in have):.3f}" if have else "–")
        res = configs[mine[0]].resolution
        lines.append(f"| {fam} | {res} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    md = HERE / "process_state.md"
    head = "" if md.exists() else "# Networks timed at each stage of a build (#32 part 0)\n\n    python experiments/lut_all_families/process_state.py\n"
    io.write_text(md, (md.read_text() if md.exists() else head) + text)
    print(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=4, help="networks per family")
    p.add_argument("--here", action="store_true",
                   help="time the networks in this process (how builds timed them before NetworksApart)")
    p.add_argument("--report-only", action="store_true", help="tabulate process_state.json again")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.samples, args.rounds, args.here)
        return 0
    raw = HERE / "process_state.json"   # the timings, kept before the report is written
    if not args.report_only:
        io.write_text(raw, json.dumps(run(args), indent=1))
    report(json.loads(raw.read_text()), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
