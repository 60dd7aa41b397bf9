"""Widths trained in the supernet (FBNetV2 channel masks) against today's full-width supernet.

Two EfficientFormer supernets on the small space, same data, epochs and seed: one with width α
and channel masking (``--train-widths``, the default), one at full width only
(``--no-train-widths``). For each it records, after BN recalibration on the same 256 images and
scored on the same 1000 validation images:

* the inherited top-1 of the min-width sub-network (every stage at its narrowest width, every
  slot with its most probable block) and of 10 random sub-networks (the same 10 for both);
* each of those with the channels in trained order and in L1-importance order (the reorder that
  slimming does before it starts; is it still worth it once prefixes are trained?);
* a slimming ladder on iphone12 to two targets (one trajectory), with either channel order:
  the emitted configs' inherited top-1.

Resumable: finished supernets are reused, unfinished ones resumed; the evaluations are cheap.

    python experiments/width_training/run.py --data fashion-mnist --epochs 1 --img-size 32
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import random
import sys
import time
from pathlib import Path

import torch

from nas import checkpoint, runs
from nas.evaluate import Evaluator
from nas.session import SupernetSession
from nas.train import Recipe, supernet_recipe, train_or_resume
from supernets.config import ArchConfig, Choice
from supernets.registry import random_choice

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODES = {"widths trained": True, "full width only": False}   # the recipe's train_widths


def _train(work: Path, name: str, train_widths: bool, args, times: dict) -> Path:
    run_dir = work / name
    if not runs.read_info(run_dir).get("complete"):
        recipe = supernet_recipe(space="small", data=args.data, img_size=args.img_size, epochs=args.epochs,
                                 batch_size=args.batch_size, train_widths=train_widths)
        t0 = time.time()
        train_or_resume(recipe, run_dir, progress=False)
        times[f"train {name}"] = times.get(f"train {name}", 0.0) + time.time() - t0
    return run_dir / runs.SUPERNET


def _scores(ckpt_path: Path, choices: list[Choice], seed: int) -> dict[str, list[float]]:
    """Inherited top-1 of each choice, channels in trained order and in importance order."""
    ckpt = checkpoint.load(ckpt_path)
    recipe = Recipe.from_dict(ckpt["recipe"])
    evaluator = Evaluator.of_data(recipe.data, recipe.img_size, recipe.seed, 256, 1000, seed)
    out = {}
    net = checkpoint.build_supernet(ckpt).eval()
    for order in ("trained", "importance"):
        if order == "importance":
            net = copy.deepcopy(net)
            net.reorder_channels()
        out[order] = [round(evaluator(net.subnet(c)).accuracy, 2) for c in choices]
    return out


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--targets", type=float, nargs=2, default=[1.3, 1.0], help="iphone12 ladder (ms)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(REPO / "runs" / "width_training"), help="resumable working folder")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    times_path = work / "times.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}

    ckpts = {}
    for mode, train_widths in MODES.items():
        ckpts[mode] = _train(work, "widths" if train_widths else "full", train_widths, args, times)
        times_path.write_text(json.dumps(times, indent=1))

    net = checkpoint.build_supernet(checkpoint.load(ckpts["widths trained"]))
    space = net.space
    start = net.initial_choice()
    min_width = Choice(tuple(s.min_width for s in space.stages), start.kinds)
    rng = random.Random(args.seed)
    randoms = [random_choice(space, rng) for _ in range(10)]
    rows = []
    for mode, path in ckpts.items():
        s = _scores(path, [min_width, *randoms], args.seed)
        for order, accs in s.items():
            rows.append({"supernet": mode, "channel order": order, "min-width": accs[0],
                         "random mean": round(sum(accs[1:]) / 10, 2), "random min": min(accs[1:]),
                         "random max": max(accs[1:]), "random": " ".join(map(str, accs[1:]))})

    slims = []
    for mode, path in ckpts.items():
        for order in ("natural", "importance"):
            t0 = time.time()
            session = SupernetSession.open(supernet=path, runs_dir=work, device="iphone12", channel_order_rule=order,
                                           progress=False)
            emitted = session.slim(args.targets, path.parent / "slim")
            for t, config in zip(args.targets, emitted.configs):
                cfg = ArchConfig.load(config)
                slims.append({"supernet": mode, "channel order": order, "target ms": t,
                              "predicted ms": cfg.meta["predicted_ms"], "inherited top-1": cfg.meta["inherited_top1"],
                              "steps": cfg.meta["steps"], "slim s": round(time.time() - t0), "config": cfg.summary()})
    with open(HERE / "subnets.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(HERE / "slim.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(slims[0]))
        w.writeheader()
        w.writerows(slims)
    times_path.write_text(json.dumps(times, indent=1))
    print(json.dumps({"subnets": rows, "slim": slims, "times": times}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run())
