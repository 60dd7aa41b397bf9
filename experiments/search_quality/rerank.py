"""The supernet's ranking of a finished study's candidates, for another supernet recipe (issue #14).

Training the candidates is the expensive part of ``run.py``. Their trained top-1 is a fact about
each architecture under the ``nas train`` recipe, whichever supernet estimated it. So this trains
(or resumes) one supernet with the study's recipe, changed only as the flags say (``--mixing
hard``, ...), scores the study's recorded candidates with the same estimates (``ESTIMATES`` in
run.py), and reports Kendall τ and Spearman ρ against the recorded trained top-1s, beside the
recorded supernet's (the "before", recomputed from the same rows) and the τ a perfect estimator
could reach against them (``tau_ceiling.py``). It answers "would this supernet rank better?"
without training a candidate; whether the slim then emits a better network is ``run.py``'s.

    python experiments/search_quality/rerank.py --mixing hard --supernet-epochs 8 --batch-size 256
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from nas import checkpoint, runs
from nas.slim import channel_order
from nas.train import Recipe
from supernets import io
from supernets.config import SearchSpace
from run import (ESTIMATES, HERE, REPO, _choice_at, _timing, published_l1, rank_lines,  # beside this script
                 supernet_estimates, train_study_supernet)
from tau_ceiling import describe, tau_ceiling


def recorded_networks(candidates_csv: Path) -> list[dict]:
    """The study's candidates at the target, each network once (S = Sp is one), step candidates aside."""
    with open(candidates_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["candidate"].startswith("C")]
    seen, out = set(), []
    for r in rows:
        if r["config"] not in seen:
            seen.add(r["config"])
            out.append(r)
    return out


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default=str(HERE / "h200-8ep"), help="a finished run.py result folder (candidates.csv)")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--supernet-epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--space", default=str(HERE / "space.yaml"))
    # the supernet recipe's fields that this compares; unset: the product's default
    ap.add_argument("--mixing", choices=["soft", "hard"])
    ap.add_argument("--tau-max", type=float)
    ap.add_argument("--tau-min", type=float)
    ap.add_argument("--arch-lr", type=float)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of training and the estimates")
    ap.add_argument("--label", help="the variant's name (default: from the changed fields and epochs)")
    ap.add_argument("--work", default=str(REPO / "runs" / "search_quality_rerank"))
    ap.add_argument("--results", default=str(HERE / "rerank"), help="where LABEL.md and LABEL.json go")
    args = ap.parse_args(argv)
    changes = {k: getattr(args, k) for k in ("mixing", "tau_max", "tau_min", "arch_lr") if getattr(args, k) is not None}
    label = args.label or "-".join([*(f"{k.replace('_', '-')}-{v:g}" if isinstance(v, float) else str(v)
                                      for k, v in changes.items()), f"{args.supernet_epochs}ep"])
    candidates_csv = Path(args.study) / "candidates.csv"
    if not candidates_csv.is_file():
        sys.exit(f"{candidates_csv} does not exist: give --study a finished run.py result folder")
    networks = recorded_networks(candidates_csv)
    work = Path(args.work) / label
    torch.set_num_threads(args.threads)
    space = SearchSpace.load(args.space)

    work.mkdir(parents=True, exist_ok=True)
    times = json.loads((work / "times.json").read_text()) if (work / "times.json").is_file() else {}
    if not runs.read_info(work / "supernet").get("complete"):
        with _timing(times, "train-supernet", work):
            train_study_supernet(work / "supernet", space=args.space, data=args.data, img_size=args.img_size,
                                 epochs=args.supernet_epochs, batch_size=args.batch_size, threads=args.threads,
                                 **changes)
    ckpt = checkpoint.load(work / "supernet" / runs.SUPERNET)
    net = checkpoint.build_supernet(ckpt).eval()
    if channel_order("auto", net) == "importance":   # as slimming and run.py score
        net.reorder_channels()
    recipe = Recipe.from_dict(ckpt["recipe"])
    template = published_l1(10)
    with _timing(times, "estimates", work):   # a resume scores only what is missing
        scores = supernet_estimates(net, recipe, {r["candidate"]: _choice_at(space, r["config"], template)
                                                  for r in networks}, work / "inherited.json")
    after = [{**r, **{f"inherited_{e}": scores[e][r["candidate"]][0] for e, _, _ in ESTIMATES},
              "inherited_loss": scores["slim"][r["candidate"]][1]} for r in networks]

    ceiling = tau_ceiling([[float(v) for v in r["per_seed"].split()] for r in networks])
    rec = {k: v for k, v in ckpt["recipe"].items() if k in ("mixing", "tau_max", "tau_min", "arch_lr", "train_widths",
                                                              "epochs", "batch_size", "img_size", "lr", "seed")}
    lines = [f"# Supernet ranking, {label}: the recorded candidates of `{Path(args.study).name}` re-estimated", "",
             "```", "python experiments/search_quality/rerank.py " + " ".join(
                 [*(f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float) else f"--{k.replace('_', '-')} {v}"
                    for k, v in changes.items()), f"--supernet-epochs {args.supernet_epochs}",
                  f"--batch-size {args.batch_size}", f"--img-size {args.img_size}"]), "```", "",
             f"Supernet trained on {torch.cuda.get_device_name() if torch.cuda.is_available() else 'the CPU'} "
             f"({args.threads} threads), recipe {json.dumps(rec)}. Trained top-1s: `{candidates_csv.relative_to(REPO)}` "
             f"(`nas train` from scratch, mean over seeds), {len(networks)} distinct networks at the target.", "",
             "| candidate | trained top-1 | recorded supernet (slim) | this supernet (slim) | this (calib-2k) |",
             "|---|---|---|---|---|"]
    for before, now in zip(networks, after):
        lines.append(f"| {before['candidate']} | {float(before['top1']):.2f} | {float(before['inherited_slim']):.2f} | "
                     f"{now['inherited_slim']:.2f} | {now['inherited_calib-2k']:.2f} |")
    lines += ["", "Rank correlation with trained top-1, the recorded supernet (recomputed from the study's rows):", "",
              "| estimate | Kendall τ | Spearman ρ |", "|---|---|---|", *rank_lines(networks), "",
              f"This supernet ({label}):", "", "| estimate | Kendall τ | Spearman ρ |", "|---|---|---|",
              *rank_lines(after), ""]
    if ceiling:
        lines += [describe(ceiling), ""]
    lines += ["Wall time per phase (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()), ""]
    out = Path(args.results)
    io.write_text(out / f"{label}.md", "\n".join(lines))
    io.write_text(out / f"{label}.json", json.dumps({"recipe": ckpt["recipe"], "estimates": scores}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run())
