"""Slimming per family on this CPU: predicted vs measured latency of the emitted config.

For each family the user's pipeline, from scratch, in a scratch runs directory:
``nas train-supernet --family F`` (embedded digits), ``nas lut build --device cpu --family F``,
``nas slim --family F --target-ms T`` with T = ``--target-fraction`` of the supernet's initial
choice, then the emitted config is timed end to end together with the table's calibration
networks (``lut.validate.compare``; their speed now / at build time is the machine's drift).
Appends one section per family to result.md (trajectory table, predicted vs measured) and keeps
the trajectory CSV/PNG here.

    python experiments/family_slim/run.py --family mobilevitv3 --epochs 3 --target-fraction 0.6
    python experiments/family_slim/run.py --family fmvit --epochs 3 --target-fraction 0.8 --target-fraction 0.6

With several fractions the supernet and table are shared and every emitted config is timed.
For a family with α-searched knobs (FMViT's frequency split) the section starts with their α.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lut import store, validate
from lut.table import LatencyTable
from nas import checkpoint
from nas.report import branches_kept
from nas.session import SupernetSession
from nas.train import supernet_recipe, train_supernet_run
from supernets.config import ArchConfig

HERE = Path(__file__).resolve().parent


def run_family(family: str, args) -> str:
    fractions = args.target_fraction or [0.6]
    with tempfile.TemporaryDirectory() as tmp:
        runs, tables = Path(tmp) / "runs", Path(tmp) / "tables"
        t0 = time.time()
        ckpt = train_supernet_run(supernet_recipe(family=family, epochs=args.epochs), runs / family, progress=False,
                                  log=lambda line: None)
        trained = time.time()
        store.build_tables("cpu", [family], tables_dir=tables, rounds=args.rounds, progress=False)
        built = time.time()
        net = checkpoint.build_supernet(checkpoint.load(ckpt))
        table = LatencyTable.load(next(tables.glob("cpu@*.yaml")))
        start = net.initial_choice().to_config(net.space, num_classes=net.num_classes)
        lines = [f"## {family}: slim to {' and '.join(f'{f:g}' for f in fractions)} x the start, "
                 f"{datetime.date.today().isoformat()}", "",
                 f"train-supernet {trained - t0:.0f} s ({args.epochs} epochs), lut build {built - trained:.0f} s "
                 f"({len(table.entries)} entries).", ""]
        lines += alpha_section(net)
        emitted = {}
        for fraction in fractions:
            target = round(fraction * table.predict(start), 2)
            out = Path(tmp) / f"slim-{fraction:g}"
            t1 = time.time()
            SupernetSession.open(supernet=ckpt, family=family, device="cpu", tables_dir=tables,
                                 progress=False).slim([target], out)
            stem = f"{family}@cpu-{target:g}ms"
            cfg = ArchConfig.load(out / f"{stem}.yaml")
            emitted[f"emitted {fraction:g}x"] = cfg
            name = family if len(fractions) == 1 else f"{family}-{fraction:g}x"
            for suffix in ("trajectory.csv", "trajectory.png"):
                shutil.copy(out / f"{stem}.{suffix}", HERE / f"{name}.{suffix}")
            steps = list(csv.DictReader(open(out / f"{stem}.trajectory.csv")))
            lines += [f"### target {target:g} ms ({fraction:g} x the start): slim {time.time() - t1:.0f} s", "",
                      "| step | action | detail | predicted ms | inherited top-1 % |", "|---|---|---|---|---|"]
            for s in steps:
                lines.append(f"| {s['step']} | {s['action']} | {s['detail']} | {float(s['latency_ms']):.3f} | "
                             f"{float(s['accuracy']):.2f} |")
            lines += ["", f"Emitted: `{cfg.summary()}`", ""]
        table = LatencyTable.load(table.path)
        check = validate.compare(table, {**emitted, "start": start}, rounds=args.rounds, progress=False)
    lines += ["| network | predicted ms | measured ms | error % | at build-time speed % |", "|---|---|---|---|---|"]
    for r in check.rows:
        lines.append(f"| {r['config']} | {r['predicted_ms']:.3f} | {r['measured_ms']:.3f} | {r['error_pct']:+.2f} | "
                     f"{r.get('drift_corrected_error_pct', float('nan')):+.2f} |")
    lines += ["", f"Machine drift since the build (calibration networks now / then): {check.drift:.3f}", "", ""]
    return "\n".join(lines)


def alpha_section(net) -> list[str]:
    """The α-searched stage knobs (FMViT's frequency split) as the trained supernet holds them."""
    knobs = net.knob_probabilities()
    if not any(knobs):
        return []
    lines = ["α-searched stage knobs after training (probability per value; for `hf_branches` also the "
             "probability that high-frequency branch f_i is kept, P(n >= i)):", "",
             "| stage | knob | probability per value | branch kept |", "|---|---|---|---|"]
    for j, stage in enumerate(knobs):
        for name, p in stage.items():
            kept = ""
            if name == "hf_branches":
                kept = " ".join(f"f{i} {k:.3f}" for i, k in enumerate(branches_kept(p), 1))
            lines.append(f"| {j + 1} | {name} | {' '.join(f'{v}: {q:.3f}' for v, q in p.items())} | {kept} |")
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", action="append", required=True, help="repeatable")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--target-fraction", type=float, action="append",
                   help="fraction of the start's predicted latency to slim to (repeatable; default 0.6)")
    args = p.parse_args()
    result = HERE / "result.md"
    if not result.exists():
        result.write_text("# Slimming per family on this CPU (1 thread)\n\n"
                          "Reproduce: `python experiments/family_slim/run.py --family F --epochs 3 "
                          "--target-fraction 0.6` (appends a section per family).\n\n")
    for family in args.family:
        section = run_family(family, args)
        print(section)
        with open(result, "a") as f:
            f.write(section)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
