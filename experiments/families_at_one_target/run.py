"""Every family at one target: ``nas train-supernet --family all`` (the small spaces, the
embedded digits), then ``nas slim --family all --target-ms T --device D`` (default iphone12).
Copies the resulting ``families.csv`` / ``families.png`` here (under ``D/`` for another device)
and writes ``result.md`` there. Resumable: the training command resumes per family, finished
families are skipped.

    python experiments/families_at_one_target/run.py --target-ms 1.2 --epochs 2
    python experiments/families_at_one_target/run.py --device xnnpack --target-ms 8 --tables runs/executorch_tables/tables
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

from supernets import registry
from nas.session import slim_every_family
from nas.train import train_every_family

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target-ms", type=float, default=1.2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--work", default=str(REPO / "runs" / "families"), help="resumable working folder")
    ap.add_argument("--device", default="iphone12")
    ap.add_argument("--tables", default=None, help="latency tables directory (default: WORK/tables)")
    args = ap.parse_args(argv)
    results = HERE if args.device == "iphone12" else HERE / args.device
    work = Path(args.work)
    t0 = time.time()
    train_every_family(work, "every", data="digits", img_size=args.img_size, epochs=args.epochs, progress=False)
    t_train = time.time() - t0
    t0 = time.time()
    out = work / f"at-target-{args.device}"
    slim_every_family(registry.searchable_families(), [args.target_ms], out, runs_dir=work, device=args.device,
                      tables_dir=args.tables or work / "tables", progress=False)
    t_slim = time.time() - t0
    table = out / "families.csv"
    results.mkdir(exist_ok=True)
    shutil.copy(table, results / "families.csv")
    shutil.copy(table.with_suffix(".png"), results / "families.png")
    rows = list(csv.DictReader(open(table)))
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r.values()) + " |" for r in rows]
    command = f"python experiments/families_at_one_target/run.py --target-ms {args.target_ms:g} --epochs {args.epochs}"
    if args.device != "iphone12":
        command += f" --device {args.device}" + (f" --tables {args.tables}" if args.tables else "")
    (results / "result.md").write_text(
        f"# Every family at {args.target_ms:g} ms on {args.device}\n\n"
        f"    {command}\n\n"
        f"Small spaces, supernets trained {args.epochs} epochs on the embedded digits at {args.img_size} px with "
        f"width α ({t_train:.0f} s for all five), then every family slimmed to the target (`nas.session.slim_every_family`, what `nas slim --family all` runs; {t_slim:.0f} s). "
        f"Inherited top-1 after BN recalibration on the digits' validation subset.\n\n" + "\n".join(lines) + "\n")
    print((results / "result.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run())
