"""Where the test suite's time goes: the README's two test commands, timed, per file and per test.

    python experiments/suite_time/run.py                 # the fast tier (-m "not slow")
    python experiments/suite_time/run.py --full          # the full suite (what CI runs)
    python experiments/suite_time/run.py --junit FILE    # tabulate an earlier run's junit XML

Prints the wall time, the test count, the 10 slowest tests and the time per test file, with this
machine's speed (the fixed workload `.ci/run` prints too), since a shared host's speed varies from
run to run. ``result.md`` records the runs of issue #29.
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def machine_speed_ms() -> float:
    """efficientformer_l1's forward at 224 px on one thread, best of 5 (ms)."""
    import timm
    import torch

    torch.set_num_threads(1)
    model, x = timm.create_model("efficientformer_l1").eval(), torch.randn(1, 3, 224, 224)
    best = float("inf")
    with torch.no_grad():
        model(x)
        for _ in range(5):
            t = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t)
    return best * 1e3


def tabulate(junit: Path) -> list[str]:
    per_file, count, cases = collections.Counter(), collections.Counter(), []
    for case in ET.parse(junit).getroot().iter("testcase"):
        seconds = float(case.get("time", 0))
        module = case.get("classname", "")
        per_file[module] += seconds
        count[module] += 1
        cases.append((seconds, f"{module}::{case.get('name')}"))
    lines = ["| slowest tests (s, setup included) | |", "|---:|---|"]
    lines += [f"| {s:.1f} | `{name}` |" for s, name in sorted(cases, reverse=True)[:10]]
    lines += ["", "| file | tests | s |", "|---|---:|---:|"]
    lines += [f"| `{m}` | {count[m]} | {s:.1f} |" for m, s in per_file.most_common()]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="the full suite (default: -m 'not slow')")
    ap.add_argument("--junit", default=None, help="tabulate this junit XML instead of running")
    args = ap.parse_args(argv)
    print(f"machine speed: efficientformer_l1 forward {machine_speed_ms():.1f} ms (224 px, 1 thread, best of 5)")
    junit = Path(args.junit) if args.junit else Path(tempfile.mkdtemp()) / "junit.xml"
    if not args.junit:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
        t = time.time()
        done = subprocess.run(cmd + ([] if args.full else ["-m", "not slow"]), cwd=REPO)
        print(f"wall: {time.time() - t:.0f} s, pytest exit {done.returncode}")
    print("\n".join(tabulate(junit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
