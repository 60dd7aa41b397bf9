"""Error bars on estimated latencies (#32 part 2): what `nas show`, `nas slim` and `nas slim
--confidence` print on the estimated iPhone tables, for a supernet trained on the embedded digits.

    python experiments/error_bars/run.py            # after experiments/families_at_one_target/run.py

Takes the newest EfficientFormer supernet under --runs (default: the one
experiments/families_at_one_target trains, runs/families; trains one there if there is none),
slims it to --target-ms on iphone12 and iphone13 with and without --confidence, and records the
printed lines, the emitted configs' predictions and bounds, and the tables' error ratios in
result.md here.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io as stdio
import sys
from pathlib import Path

from lut import store
from nas import runs
from nas.cli import main
from nas.core import io
from supernets.config import ArchConfig

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = stdio.StringIO(), stdio.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue() + err.getvalue()


def run(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(REPO / "runs" / "families"))
    ap.add_argument("--target-ms", type=float, default=1.2)
    ap.add_argument("--confidence", type=float, nargs="+", default=[0.75, 0.9])
    args = ap.parse_args(argv)
    work = Path(args.runs)
    try:
        supernet = runs.latest_supernet(work, "efficientformer")
    except Exception:   # noqa: BLE001 - none trained yet: train the small space on the digits
        assert main(["train-supernet", "--family", "efficientformer", "--runs", str(work), "--no-progress"]) == 0
        supernet = runs.latest_supernet(work, "efficientformer")
    tables = work / "tables"
    lines = [f"# Error bars on estimated latencies ({datetime.date.today()})", "",
             "    python experiments/error_bars/run.py", "",
             f"Supernet: `{supernet.relative_to(REPO) if supernet.is_relative_to(REPO) else supernet}` (EfficientFormer, "
             "small space, embedded digits). Each estimated table carries quantiles of published / estimated latency "
             "over the calibration rows of its own protocol, each predicted by a fit that never saw its architecture "
             "family (`experiments/apple_estimate`, leave-family-out); the 80 % interval is the prediction times the "
             "10 % and 90 % ratios, and `--confidence P` slims until the prediction times the P ratio meets the target.",
             ""]
    for device in ("iphone12", "iphone13"):
        table = store.open_predictor(device, 224, tables, progress=False)[0]
        q = {p: table.error_ratio(p) for p in (0.1, 0.5, 0.75, 0.9)}
        lines += [f"## {device} (`{table.environment['estimate_error']['source']}`, "
                  f"{table.environment['estimate_error']['rows']} held-out rows)", "",
                  "Ratios published / estimated: " + ", ".join(f"{int(p * 100)} %: ×{r:.2f}" for p, r in q.items()), "",
                  "| run | emitted predicted ms | bound ms | inherited top-1 % | steps |", "|---|---|---|---|---|"]
        printed = []
        for confidence in (None, *args.confidence):
            out = work / "error_bars" / device / (f"p{confidence:g}" if confidence else "plain")
            flags = ["slim", "--target-ms", f"{args.target_ms:g}", "--device", device, "--supernet", str(supernet),
                     "--tables", str(tables), "--out", str(out), "--no-progress"]
            rc, said = _run(flags + (["--confidence", f"{confidence:g}"] if confidence else []))
            shown = "nas " + " ".join(flags[:5]) + (f" --confidence {confidence:g}" if confidence else "")
            config_lines = [x for x in said.splitlines() if x.startswith(("config:", "error:"))] or said.splitlines()[-1:]
            printed += [f"$ {shown}", *config_lines]
            if rc != 0:
                lines.append(f"| `{shown}` | exit {rc}: {config_lines[-1]} | | | |")
                continue
            cfg = ArchConfig.load(out / f"efficientformer@{device}-{args.target_ms:g}ms.yaml")
            bound = cfg.meta.get("upper_ms", "")
            lines.append(f"| `{shown}` | {cfg.meta['predicted_ms']:.3f} | {bound} | {cfg.meta['inherited_top1']:.2f} | "
                         f"{cfg.meta['steps']} |")
            if confidence is None:
                rc, shown_text = _run(["show", str(out / f"efficientformer@{device}-{args.target_ms:g}ms.yaml"),
                                       "--device", device, "--tables", str(tables)])
                printed += [f"$ nas show {device} config", *[x for x in shown_text.splitlines() if "latency" in x]]
        lines += ["", "```", *[x.replace(str(REPO) + "/", "") for x in printed], "```", ""]
    io.write_text(HERE / "result.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run())
