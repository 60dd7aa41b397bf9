"""The supernet's ranking of a finished study's candidates, for another supernet recipe (issue #14).

Training the candidates is the expensive part of ``run.py``. Their trained top-1 is a fact about
each architecture under the ``nas train`` recipe, whichever supernet estimated it. So this trains
(or resumes) one supernet with the study's recipe, changed only as the flags say (``--mixing
hard``, ...), scores the study's recorded candidates with the same estimates (``ESTIMATES`` in
run.py), and reports Kendall τ and Spearman ρ against the recorded trained top-1s, beside the
recorded supernet's (the "before", recomputed from the same rows) and the τ a perfect estimator
could reach against them (``tau_ceiling.py``). It answers "would this supernet rank better?"
without training a candidate. With ``--slim paper per-stage`` it also slims this supernet to the
study's target (L1's predicted latency) with each proposal rule (``nas slim --proposals``) and
reports what each emits, at how many evaluated sub-networks, with this supernet's estimates beside
L1's (the importance rule compared by the estimate the ranking above validates); with
``--slim-seeds N`` it trains each emitted network from scratch with the study's ``nas train``
recipe and N seeds, beside the recorded S and L1: the first look at whether the better ranking
emits a better network (the whole study, with its randoms and search, is ``run.py``'s).

    python experiments/search_quality/rerank.py --mixing hard --supernet-epochs 8 --batch-size 256
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from lut.devices import find_table
from lut.table import LatencyTable
from nas import checkpoint, runs
from nas.session import SupernetSession
from nas.slim import PROPOSALS, channel_order
from nas.supernet_training import Recipe
from nas.train_model import MODEL, resume_training, train_config
from nas.core import io
from supernets.config import ArchConfig, SearchSpace
from supernets.metapath import MODES
from study import (DEVICE, ESTIMATES, HERE, REPO, choice_at, choice_of, evaluated, published_l1,  # beside this script
                   rank_lines, read_csv, supernet_estimates, timing, train_study_supernet, trained)
from tau_ceiling import describe, tau_ceiling


def recorded_networks(candidates_csv: Path) -> list[dict]:
    """The study's candidates at the target, each network once (S = Sp is one), step candidates aside."""
    rows = [r for r in read_csv(candidates_csv) if not r["candidate"].startswith("C")]
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
    ap.add_argument("--mixing", choices=MODES)
    ap.add_argument("--tau-max", type=float)
    ap.add_argument("--tau-min", type=float)
    ap.add_argument("--arch-lr", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--slim", nargs="*", choices=PROPOSALS, default=[], metavar="PROPOSALS",
                    help=f"also slim to the target with each of these proposal rules ({', '.join(PROPOSALS)})")
    ap.add_argument("--slim-subsets", nargs=2, type=int, metavar=("CALIB", "VAL"),
                    help="slim on this many calibration and validation images (default: the product's); "
                    "what is emitted is then scored with every estimate all the same")
    ap.add_argument("--slim-seeds", type=int, default=0, help="train each slimmed network with this many seeds "
                    "(with no --slim: slim with the product's default rule)")
    ap.add_argument("--epochs", type=int, default=4, help="nas train epochs of S (the study's: 4 in h200-8ep)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of training and the estimates")
    ap.add_argument("--label", help="the variant's name (default: from the changed fields and epochs)")
    ap.add_argument("--work", default=str(REPO / "runs" / "search_quality_rerank"))
    ap.add_argument("--results", default=str(HERE / "rerank"), help="where LABEL.md and LABEL.json go")
    args = ap.parse_args(argv)
    if args.slim_seeds and not args.slim:
        args.slim = [PROPOSALS[0]]
    changes = {k: getattr(args, k) for k in ("mixing", "tau_max", "tau_min", "arch_lr", "seed")
               if getattr(args, k) is not None}
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
        with timing(times, "train-supernet", work):
            train_study_supernet(work / "supernet", space=args.space, data=args.data, img_size=args.img_size,
                                 epochs=args.supernet_epochs, batch_size=args.batch_size, threads=args.threads,
                                 **changes)
    ckpt = checkpoint.load(work / "supernet" / runs.SUPERNET)
    net = checkpoint.build_supernet(ckpt).eval()
    if channel_order("auto", net) == "importance":   # as slimming and run.py score
        net.reorder_channels()
    recipe = Recipe.from_dict(ckpt["recipe"])
    template = published_l1(10)
    with timing(times, "estimates", work):   # a resume scores only what is missing
        scores = supernet_estimates(net, recipe, {r["candidate"]: choice_at(space, r["config"], template)
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
                  f"--batch-size {args.batch_size}", f"--img-size {args.img_size}",
                  *([f"--slim {' '.join(args.slim)}"] if args.slim else []),
                  *([f"--slim-subsets {' '.join(map(str, args.slim_subsets))}"] if args.slim_subsets else []),
                  *([f"--slim-seeds {args.slim_seeds} --epochs {args.epochs}"] if args.slim_seeds else []),
                  *([f"--label {args.label}"] if args.label else [])]), "```", "",
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
    if args.slim:
        lines += slim_and_train(args, work, times, networks, space, net, recipe, template) + [""]
    lines += ["Wall time per phase (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()), ""]
    out = Path(args.results)
    io.write_text(out / f"{label}.md", "\n".join(lines))
    estimates = json.loads((work / "inherited.json").read_text())   # with the slimmed networks'
    io.write_text(out / f"{label}.json", json.dumps({"recipe": ckpt["recipe"], "estimates": estimates}, indent=1))
    print("\n".join(lines))
    return 0


def slim_and_train(args, work: Path, times: dict, networks: list[dict], space: SearchSpace, net, recipe: Recipe,
                   template: ArchConfig) -> list[str]:
    """Slim this supernet to the study's target with each rule of `--slim`, score what each emits
    with this supernet's estimates (beside L1's), train it with `--slim-seeds` seeds as run.py
    trains every candidate (`nas train` from scratch, the same flags), and report it."""
    table = LatencyTable.load(find_table(DEVICE, space.resolution, work / "tables"))
    target = round(table.predict(published_l1(10)), 4)
    stem = f"efficientformer@{DEVICE}-{target:g}ms"
    calib, val = args.slim_subsets or (None, None)
    subsets = f"-{calib}-{val}" if args.slim_subsets else ""
    emitted = {}   # rule -> (config path, evaluated sub-networks)
    for rule in args.slim:
        folder = work / f"slim-{rule}{subsets}"
        if not (folder / f"{stem}.yaml").is_file():
            with timing(times, f"slim {rule}{subsets}", work), io.all_or_nothing():
                SupernetSession.open(supernet=work / "supernet" / runs.SUPERNET, device=DEVICE,
                                     tables_dir=work / "tables", threads=args.threads, calib_images=calib,
                                     val_images=val, progress=False).slim([target], folder, proposals=rule)
        emitted[rule] = (folder / f"{stem}.yaml", evaluated(read_csv(folder / f"{stem}.trajectory.csv")))
    with timing(times, "estimates", work):
        scores = supernet_estimates(net, recipe, {f"S-{rule}{subsets}": choice_of(path, space)
                                                  for rule, (path, _) in emitted.items()}, work / "inherited.json")
    names = {f"S-{rule}{subsets}": rule for rule in emitted}
    lines = [f"Slimmed to T = {target:g} ms with each proposal rule (`nas slim --proposals`"
             + (f", scoring on {calib} calibration / {val} validation images" if subsets else "")
             + "), and L1; this supernet's estimates (top-1 %):", "",
             "| network | rule | evaluated | predicted ms | " + " | ".join(e for e, _, _ in ESTIMATES) + " | config |",
             "|---|---|---|---|" + "---|" * len(ESTIMATES) + "---|"]
    for name, rule in [*names.items(), ("L1", None)]:
        cfg = ArchConfig.load(emitted[rule][0]) if rule else template
        lines.append(f"| {name} | {rule or 'published'} | {emitted[rule][1] if rule else '–'} | "
                     f"{table.predict(cfg):.4f} | " + " | ".join(f"{scores[e][name][0]:.2f}" for e, _, _ in ESTIMATES)
                     + f" | `{cfg.summary()}` |")
    if not args.slim_seeds:
        return lines
    lines += ["", "| network | trained top-1 (mean) | seeds | per seed |", "|---|---|---|---|"]
    for rule, (config, _) in emitted.items():
        top1 = []
        for seed in range(args.slim_seeds):
            out = work / "train" / f"S-{rule}{subsets}-scratch-s{seed}"
            if not trained(out, args.epochs):
                with timing(times, f"train {out.name}", work):
                    if (out / MODEL).is_file():
                        resume_training(out, progress=False)
                    else:
                        train_config(config, out_dir=out, init="scratch", data=args.data, img_size=args.img_size,
                                     epochs=args.epochs, batch_size=args.batch_size, seed=seed, device="auto",
                                     threads=args.threads, progress=False)
            top1.append(checkpoint.load(out / MODEL, (checkpoint.MODEL_FORMAT,))["history"][-1]["ema_top1"])
        lines.append(f"| S-{rule}{subsets} of this supernet | {statistics.mean(top1):.2f} | {len(top1)} | "
                     f"{' '.join(f'{v:.2f}' for v in top1)} |")
    recorded = {r["candidate"]: r for r in networks}
    for name in ("S", "L1"):
        r = recorded.get(name)
        if r:
            lines.append(f"| {name} recorded (`{Path(args.study).name}`) | {float(r['top1']):.2f} | {r['seeds']} | "
                         f"{r['per_seed']} |")
    return lines


if __name__ == "__main__":
    sys.exit(run())
