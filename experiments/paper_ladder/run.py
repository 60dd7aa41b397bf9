"""One supernet, every target: the EfficientFormer latency ladder 7.0 / 3.0 / 1.6 ms on iphone12.

The paper-scale EfficientFormer supernet (``--space paper``: L7-sized, L1/L3/L7 are points of it)
is trained once, then one ``nas slim --target-ms 7.0 3.0 1.6 --device iphone12`` emits a config
per rung. The result table sets each emitted config next to the published variant at that
latency (L7, L3, L1): widths, depths, MB3D count, params, MACs, predicted ms; plus the ladder's
steps and wall time. Resumable: a finished supernet is reused, an unfinished one resumed.

    python experiments/paper_ladder/run.py --data digits --img-size 32 --epochs 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import search_spaces
from lut.devices import find_table
from lut.table import LatencyTable
from nas import runs
from nas.report import costs
from nas.session import SupernetSession
from nas.train import supernet_recipe, train_or_resume
from supernets.config import ArchConfig

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LADDER = {7.0: "l7", 3.0: "l3", 1.6: "l1"}


def _row(name: str, cfg: ArchConfig, table: LatencyTable, steps: str = "") -> str:
    c = costs(cfg)
    mb3d = sum(b.kind == "mb3d" for s in cfg.stages for b in s.blocks)
    return (f"| {name} | {'/'.join(map(str, cfg.widths))} | {'/'.join(map(str, cfg.depths))} | {mb3d} | "
            f"{c['params_deploy'] / 1e6:.2f} | {c['macs'] / 1e9:.3f} | {table.predict(cfg):.3f} | {steps} |")


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--work", default=str(REPO / "runs" / "paper_ladder"), help="resumable working folder")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    times_path = work / "times.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}

    run_dir = work / "supernet"
    if not runs.read_info(run_dir).get("complete"):
        recipe = supernet_recipe(space="paper", data=args.data, img_size=args.img_size, epochs=args.epochs,
                                 batch_size=args.batch_size)
        t0 = time.time()
        train_or_resume(recipe, run_dir, progress=False)
        times["train_supernet_s"] = times.get("train_supernet_s", 0.0) + time.time() - t0
        times_path.write_text(json.dumps(times, indent=1))

    slim_dir = run_dir / "slim"
    trajectory_csv = slim_dir / f"efficientformer@iphone12-{'-'.join(f'{t:g}' for t in LADDER)}ms.trajectory.csv"
    t0 = time.time()
    if "ladder_s" in times and trajectory_csv.is_file():
        pass   # the ladder ran: only the table is rewritten
    else:
        session = SupernetSession.open(supernet=run_dir / runs.SUPERNET, runs_dir=work, device="iphone12",
                                       progress=False)
        session.slim(list(LADDER), slim_dir)
        times["ladder_s"] = time.time() - t0
        times_path.write_text(json.dumps(times, indent=1))

    table = LatencyTable.load(find_table("iphone12", 224, work / "tables"))   # no user table there: the shipped one
    lines = ["| config | widths | depths | #MB3D | params (M, deploy) | MACs (G) | iphone12 ms | reached at step |",
             "|---|---|---|---|---|---|---|---|"]
    for target, variant in LADDER.items():
        emitted = ArchConfig.load(slim_dir / f"efficientformer@iphone12-{target:g}ms.yaml").replace(num_classes=1000)
        published = ArchConfig.load(search_spaces.variant_path("efficientformer", variant)).replace(
            head={"distillation": False})
        lines.append(_row(f"slim → {target:g} ms", emitted, table, str(emitted.meta.get("steps", ""))))
        lines.append(_row(f"EfficientFormer-{variant.upper()}", published, table))
    trajectory = trajectory_csv.read_text().splitlines()
    out = "\n".join(lines) + (f"\n\nladder: {len(trajectory) - 2} steps, {times['ladder_s']:.0f} s wall "
                              f"(supernet training {times.get('train_supernet_s', 0):.0f} s)\n")
    (HERE / "table.md").write_text(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(run())
