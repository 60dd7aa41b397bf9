"""timm's own model tests on every nas_* model: pass counts per test group and family (issue #15).

Runs ``tests/supernets/timm_suite`` (timm's own ``tests/test_models.py``, fetched from the sdist of
the installed timm at test time, on the ``nas_*`` models only; its conftest says how models are
chosen) over **all 30 variants** (``NAS_TIMM_ALL_VARIANTS=1``; the test suite itself runs one
variant per family) and tabulates the outcome of every test by timm's marker group (``cfg``, ``forward``, ``backward``, ``features``, ``torchscript``,
``fxforward``, ``fxbackward``; tests without a marker are ``unmarked``) and family.

    python experiments/timm_conformance/run.py                  # run the suite, print the table
    python experiments/timm_conformance/run.py --junit FILE     # tabulate an earlier run's junit XML

``result.md`` holds the tables before and after issue #15's work (``--out FILE`` writes one).

An xfail entry, were one added to the suite's conftest, would count as not passed.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from nas.core import io
from supernets.registry import family_names

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SUITE = REPO / "tests" / "supernets" / "timm_suite"
GROUPS = ("cfg", "forward", "backward", "features", "torchscript", "fxforward", "fxbackward")
FAMILIES = tuple(family_names())


def _groups_of_tests() -> dict[str, str]:
    """test function -> its timm marker group, read from the fetched file's decorators."""
    sys.path.insert(0, str(REPO))
    from tests.supernets.timm_suite import fetched

    group, out = "unmarked", {}
    for line in fetched.test_models_file().read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("@pytest.mark."):
            mark = stripped[len("@pytest.mark."):].split("(")[0]
            if mark in GROUPS and group == "unmarked":
                group = mark
        elif stripped.startswith("def test_"):
            out[stripped[4:].split("(")[0]] = group
            group = "unmarked"
    return out


def tabulate(junit: Path) -> list[str]:
    groups = _groups_of_tests()
    passed, total = collections.Counter(), collections.Counter()
    for case in ET.parse(junit).getroot().iter("testcase"):
        if "timm_suite.test_" not in case.get("classname", ""):
            continue   # a junit of the whole test suite: only timm's tests count here
        name = case.get("name", "")
        func, _, params = name.partition("[")
        family = next((f for f in FAMILIES if f"nas_{f}_" in params), None)
        if family is None:
            continue
        outcome = {child.tag for child in case}
        if "skipped" in outcome and not any("xfail" in (c.get("type") or "") + (c.get("message") or "")
                                            for c in case if c.tag == "skipped"):
            continue   # a skip (timm's own size limits): neither passed nor failed
        key = (groups.get(func, "unmarked"), family)
        total[key] += 1
        passed[key] += not outcome & {"failure", "error", "skipped"}
    cols = [g for g in (*GROUPS, "unmarked") if any(total[(g, f)] for f in FAMILIES)]
    lines = ["| family | " + " | ".join(cols) + " | all |", "|---" * (len(cols) + 2) + "|"]
    for f in FAMILIES:
        cells = [f"{passed[(g, f)]}/{total[(g, f)]}" for g in cols]
        lines.append(f"| {f} | " + " | ".join(cells) + f" | {sum(passed[(g, f)] for g in cols)}/"
                     f"{sum(total[(g, f)] for g in cols)} |")
    cells = [f"{sum(passed[(g, f)] for f in FAMILIES)}/{sum(total[(g, f)] for f in FAMILIES)}" for g in cols]
    lines.append("| **all** | " + " | ".join(cells) + f" | {sum(passed.values())}/{sum(total.values())} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--junit", default=None, help="tabulate this junit XML instead of running the suite")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    ap.add_argument("--title", default="timm's test_models.py on the nas_* models")
    args = ap.parse_args(argv)
    junit = Path(args.junit) if args.junit else Path(tempfile.mkdtemp()) / "junit.xml"
    if not args.junit:
        subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider",
                        f"--junitxml={junit}"], cwd=REPO, env={**os.environ, "NAS_TIMM_ALL_VARIANTS": "1"})
    lines = [f"## {args.title}", "", *tabulate(junit), ""]
    print("\n".join(lines))
    if args.out:
        io.write_text(Path(args.out), "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
