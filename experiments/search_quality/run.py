"""Does the search beat hand design? Accuracy at equal latency on Fashion-MNIST (issue #14).

One EfficientFormer supernet (``space.yaml`` here: larger than L1 in every stage, L1 a point of
it) is trained once on Fashion-MNIST with the product's defaults (its mixing, width α). The
target T is EfficientFormer-L1's predicted ``iphone12`` latency on the shipped table (at the
dataset's 10 classes). Candidates, all predicted within T −3% … T where the method allows:

* **S**: what ``nas slim --target-ms T`` emits (the product's defaults);
* **Sp**: what the paper's rules emit (``--proposals paper --last-step ratio``: the product
  before this study), **Sps**: with every stage's actions measured (``--proposals per-stage``);
* **O**: the most accurate trial of ``nas search --target-ms T`` given as many evaluated
  sub-networks as slimming (S) used; **Ops** given as many as Sps used;
* **L1**: the published architecture (10 classes, no distillation head);
* **R1…Rn**: configs drawn uniformly from the space (``random_choice``, seed fixed here, never
  tuned), kept if their predicted latency falls in the window;
* **C1…Ck** (``--step-candidates``): the candidates of the slimming step that had the most, to
  rank within one step.

Every candidate is trained from scratch with the same ``nas train`` recipe; S also from its
inherited weights; S and L1 with ``--seeds`` seeds, the others with ``--all-seeds``. Reported: top-1 per candidate (mean ± spread
over seeds), params, MACs, predicted ms, inherited top-1 (the supernet's estimate, BN
recalibrated, as slimming scores; also its loss, and accuracy on every validation image with 256
and with 2,048 calibration images, to see which estimate ranks best), Kendall τ and Spearman ρ
between inherited and trained top-1 (all candidates; one step's candidates), a plot, and the wall
time of each phase. Trained top-1 is the EMA weights' (what ``nas train`` ships and exports).

Resumable: every phase records its outputs under ``--work``; an interrupted training resumes.

    python experiments/search_quality/run.py --supernet-epochs 2 --epochs 3
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from lut.devices import find_table
from lut.table import LatencyTable
from nas import checkpoint, runs
from nas import data as data_mod
from nas.cli import main as nas
from nas.report import costs
from nas.session import SupernetSession
from nas.slim import channel_order, propose
from nas.train import Recipe
from nas.train_model import MODEL
from nas.core import io
from supernets.config import ArchConfig, SearchSpace
from supernets.metapath import MODES
from supernets.registry import random_choice
from study import (DEVICE, ESTIMATES, HERE, REPO, choice_at, choice_of, evaluated,  # beside this script
                   published_l1, rank_lines, read_csv, supernet_estimates, timing, train_study_supernet, trained)
from tau_ceiling import describe, tau_ceiling   # beside this script

WINDOW = 0.03   # candidates lie within T(1 - WINDOW) ... T
# the slimming methods compared: S is the product's default, whatever it is
SLIM_VARIANTS = {"S": {}, "Sps": {"proposals": "per-stage", "last_step": "least-drop"},
                 "Sp": {"proposals": "paper", "last_step": "ratio"}}


# `nas ARGV` in a process of its own (parallel trainings): the package is found as this script finds it
_NAS_MAIN = "import sys; from nas.cli import main; sys.exit(main(sys.argv[1:]))"


def _timed(times: dict, key: str, work: Path, argv: list[str], log: Path | None = None) -> None:
    """`nas ARGV` (the candidates' trainings are what `nas train` gives a user): in this process,
    or with `log` in a subprocess of its own whose output goes there (parallel trainings)."""
    with timing(times, key, work):
        t0 = time.time()
        if log is None:
            failed = nas(argv)
        else:
            with open(log, "w") as f:
                failed = subprocess.run([sys.executable, "-c", _NAS_MAIN, *argv], stdout=f, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).returncode
            print(f"{key}: {'failed, see ' + str(log) if failed else 'done'} ({time.time() - t0:.0f} s)", flush=True)
        if failed:
            sys.exit(f"`nas {' '.join(argv)}` failed")


def _same(a: Path, b: Path) -> bool:
    """The two configs build the same network (names and notes aside)."""
    return ArchConfig.load(a).replace(name="", meta={}).to_dict() == ArchConfig.load(b).replace(name="", meta={}).to_dict()


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--supernet-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="nas train epochs of every candidate")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--randoms", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2, help="training seeds of S and L1")
    ap.add_argument("--all-seeds", type=int, default=1,
                    help="training seeds of every other candidate (R, O, Sps, ...); with 2 each mean has σ/√2 of "
                         "seed noise, which raises τ's ceiling")
    ap.add_argument("--inherited-seeds", type=int, default=1, help="training seeds of S from its inherited weights")
    ap.add_argument("--hours", type=float, default=0, help="start no training after this many hours (0: no limit); "
                    "the result reports what was trained, a resume trains the rest")
    ap.add_argument("--step-candidates", type=int, default=4, help="candidates of one slimming step to train (0: none)")
    ap.add_argument("--jobs", type=int, default=1, help="trainings at a time, each a `nas train` process (a GPU "
                    "machine: several; the candidates that need no supernet then train while it does)")
    ap.add_argument("--eval-threads", type=int, default=2, help="CPU threads of slim, search and the estimates")
    ap.add_argument("--mixing", choices=MODES, help="the supernet's mixing (default: the product's)")
    ap.add_argument("--variants", default=",".join(SLIM_VARIANTS),
                    help="the slimming methods to run, comma-separated (S, the product's, always); O searches with S's "
                         "budget, Ops with Sps's when Sps runs")
    ap.add_argument("--space", default=str(HERE / "space.yaml"))
    ap.add_argument("--work", default=str(REPO / "runs" / "search_quality"), help="resumable working folder")
    ap.add_argument("--results", default=str(HERE), help="where result.md, candidates.csv and the plot go")
    return ap


class Trainings:
    """The candidates' `nas train` runs: each config trained once per (init, seed), however many
    candidates share it; in this process, or `--jobs` at a time in processes of their own."""

    def __init__(self, args, work: Path, times: dict):
        self.args, self.work, self.times = args, work, times
        self.pool = ThreadPoolExecutor(max_workers=args.jobs)
        self.deadline = time.time() + args.hours * 3600 if args.hours else None
        self.asked: list[tuple[str, str, int]] = []   # (name, init, seed), in the order they were asked for
        self.trained_as: dict[str, str] = {}   # candidate -> the first candidate with the same config
        self.started: set[Path] = set()        # training folders already asked for
        self.futures: list = []

    def __call__(self, configs: dict[str, Path], name: str, init: str = "scratch", seed: int = 0) -> None:
        """Train `name` (a config already trained under another name is not trained again)."""
        args = self.args
        self.asked.append((name, init, seed))
        if name not in self.trained_as:
            self.trained_as[name] = next((self.trained_as[n] for n in self.trained_as
                                          if _same(configs[n], configs[name])), name)
        out = self.work / "train" / f"{self.trained_as[name]}-{init}-s{seed}"
        if out in self.started or trained(out, args.epochs):
            return
        self.started.add(out)

        def job():
            if self.deadline and time.time() > self.deadline:
                print(f"--hours {args.hours} spent: {out.name} is left for a resume")
                return
            flags = (["--resume", str(out)] if (out / MODEL).is_file() else
                     [str(configs[self.trained_as[name]]), "--init", init, "--data", args.data, "--img-size",
                      str(args.img_size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                      "--seed", str(seed), "--out", str(out)])
            _timed(self.times, f"train {out.name}", self.work, ["train", *flags, "--no-progress"],
                   log=self.work / "train" / f"{out.name}.log" if args.jobs > 1 else None)
        if args.jobs > 1:
            self.futures.append(self.pool.submit(job))
        else:
            job()

    def wait(self) -> None:
        for f in self.futures:
            f.result()
        self.pool.shutdown()


def _random_configs(space, table, classes: int, low: float, target: float, n: int) -> list[tuple[ArchConfig, int]]:
    """R: uniform draws of the space kept inside the window (seeded here, never tuned), each with
    the draws it took; replayed in full on a resume, so the same configs come out."""
    rng, kept, drawn = random.Random(0), [], 0
    while len(kept) < n:
        drawn += 1
        if drawn > 200_000:
            sys.exit("no random config of the space falls in the latency window")
        cfg = random_choice(space, rng).to_config(space, num_classes=classes)
        if low <= table.predict(cfg) <= target:
            kept.append(cfg)
    return [(cfg, drawn) for cfg in kept]


def _searched(session, space, l1, classes: int, low: float, target: float, budget: int, name: str, work: Path,
              times: dict, path: Path) -> None:
    """O: the search given `budget` evaluated sub-networks; its most accurate trial inside the
    window, as every candidate; only when it found none there, its most accurate trial under T
    (faster than the window; said in the result)."""
    search_dir = work / f"search-{budget}"
    if not (search_dir / "trials.csv").is_file():
        with timing(times, f"search {budget}", work):
            session().search([target], search_dir, trials=budget, progress=False, log=lambda line: None)
    feasible = [r for r in read_csv(search_dir / "trials.csv") if r["feasible"] == "True"]
    in_window = [r for r in feasible if float(r["latency_ms"]) >= low]
    best = max(in_window or feasible, key=lambda r: float(r["accuracy"]))
    if not path.is_file():
        choice_at(space, best["config"], l1).to_config(space, num_classes=classes).replace(
            name=name, meta={"trial": int(best["trial"]), "in_window": bool(in_window)}).save(path)


def _step_candidates(net, space, table, classes: int, trajectory: list[dict], slimmed: Path, n: int,
                     configs_dir: Path) -> dict[str, Path]:
    """C: `n` of the candidates of the slimming step that had the most (one step's ranking)."""
    k = max(range(1, len(trajectory)), key=lambda i: int(trajectory[i]["candidates"]))
    prev = choice_at(space, trajectory[k - 1]["config"], ArchConfig.load(slimmed))
    prev_ms = table.predict(prev.to_config(space, num_classes=classes))
    actions = [a for a in propose(net, prev, "per-stage")
               if table.predict(a.choice.to_config(space, num_classes=classes)) < prev_ms]
    out = {}
    for j, a in enumerate(actions[:n], start=1):
        out[f"C{j}"] = path = configs_dir / f"C{j}.yaml"
        if not path.is_file():
            a.choice.to_config(space, num_classes=classes).replace(
                name=f"C{j}", meta={"step": k, "action": f"{a.name}: {a.detail}"}).save(path)
    return out


def _train_the_rest(train: Trainings, configs: dict[str, Path], args) -> None:
    """Every candidate from scratch, S also inherited, S and L1 with several seeds; the step
    candidates last (they answer a side question, and are the largest networks). With parallel
    jobs, L1 and S were queued earlier and the randoms queue behind S and O, so a run cut short
    by --hours has the verdict's candidates first."""
    if args.jobs == 1:
        for name in sorted(configs, key=lambda n: n not in ("S", "O")):
            if not name.startswith("C"):
                train(configs, name)
        for s in range(1, args.seeds):
            train(configs, "L1", seed=s)
    else:
        for name in ("S", "O", "Sps", "Sp", "Ops"):
            if name in configs:
                train(configs, name)
    for s in range(1, args.seeds):
        train(configs, "S", seed=s)
    if args.jobs > 1:
        for i in range(1, args.randoms + 1):
            train(configs, f"R{i}")
    for s in range(args.inherited_seeds):
        train(configs, "S", "inherited", s)
    for s in range(1, args.all_seeds):
        for name in configs:
            if name not in ("S", "L1") and not name.startswith("C"):
                train(configs, name, seed=s)
    for name in configs:
        if name.startswith("C"):
            train(configs, name)


def run(argv=None) -> int:
    args = _parser().parse_args(argv)
    variants = {name: SLIM_VARIANTS[name] for name in SLIM_VARIANTS if name == "S" or name in args.variants.split(",")}
    work = Path(args.work)
    (work / "train").mkdir(parents=True, exist_ok=True)
    times = json.loads((work / "times.json").read_text()) if (work / "times.json").is_file() else {}
    space = SearchSpace.load(args.space)
    table = LatencyTable.load(find_table(DEVICE, space.resolution, work / "tables"))   # the shipped table
    classes = data_mod.load(data_mod.checked_source(args.data), 8).num_classes
    train = Trainings(args, work, times)

    # 1. the target: L1's predicted latency at the dataset's class count
    l1 = published_l1(classes)
    target = round(table.predict(l1), 4)
    low = target * (1 - WINDOW)
    configs_dir = work / "configs"
    configs: dict[str, Path] = {"L1": configs_dir / "L1.yaml"}
    if not configs["L1"].is_file():
        l1.save(configs["L1"])

    # 2. R: random configs in the window
    for i, (cfg, drawn) in enumerate(_random_configs(space, table, classes, low, target, args.randoms), start=1):
        configs[f"R{i}"] = configs_dir / f"R{i}.yaml"
        if not configs[f"R{i}"].is_file():
            cfg.replace(name=f"R{i}", meta={"draw": drawn}).save(configs[f"R{i}"])
    if args.jobs > 1:   # L1's seeds train while the supernet does
        for s in range(args.seeds):
            train(configs, "L1", seed=s)

    # 3. the supernet, once
    run_dir = work / "supernet"
    if not runs.read_info(run_dir).get("complete"):
        with timing(times, "train-supernet", work):
            train_study_supernet(run_dir, space=args.space, data=args.data, img_size=args.img_size,
                                 epochs=args.supernet_epochs, batch_size=args.batch_size,
                                 **({"mixing": args.mixing} if args.mixing else {}))
    ckpt = checkpoint.load(run_dir / runs.SUPERNET)

    def session() -> SupernetSession:
        """What `nas slim` / `nas search` open (afresh for each, as each command did)."""
        return SupernetSession.open(supernet=run_dir / runs.SUPERNET, device=DEVICE, tables_dir=work / "tables",
                                    threads=args.eval_threads, progress=False)

    # 4. S: slimming to T with the product's defaults; Sps and Sp with other rules (the methods
    # this study compared). Each one's evaluation count is the budget its search (O) gets
    budgets, trajectories = {}, {}
    for name, rules in variants.items():
        slim_dir = work / f"slim-{name}"
        stem = f"efficientformer@{DEVICE}-{target:g}ms"
        configs[name] = slim_dir / f"{stem}.yaml"
        if not configs[name].is_file():
            with timing(times, f"slim {name}", work), io.all_or_nothing():
                session().slim([target], slim_dir, **rules)
        trajectories[name] = read_csv(slim_dir / f"{stem}.trajectory.csv")
        budgets[name] = evaluated(trajectories[name])
        if name == "S" and args.jobs > 1:   # S's seeds train while the search and the other slimmings run
            for s in range(args.seeds):
                train(configs, "S", seed=s)
    budget = budgets["S"]

    # 5. O: the search with as many evaluated sub-networks as slimming (S; Ops: as Sps)
    for name, of in (("O", "S"), ("Ops", "Sps")) if "Sps" in variants else (("O", "S"),):
        configs[name] = configs_dir / f"O-{budgets[of]}.yaml"
        _searched(session, space, l1, classes, low, target, budgets[of], name, work, times, configs[name])

    # 6. C: the candidates of the slimming step that had the most (per-stage proposals: the most)
    net = checkpoint.build_supernet(ckpt).eval()
    recipe = Recipe.from_dict(ckpt["recipe"])
    if channel_order("auto", net) == "importance":
        net.reorder_channels()
    if args.step_candidates:
        stepper = "Sps" if "Sps" in variants else "S"
        configs.update(_step_candidates(net, space, table, classes, trajectories[stepper], configs[stepper],
                                        args.step_candidates, configs_dir))

    # 7. training of the rest, started before the estimates so that parallel trainings overlap them
    _train_the_rest(train, configs, args)

    # 8. the supernet's estimate of every candidate: as slimming scores (accuracy, and its loss),
    # and on every validation image with the default and with 8x the calibration images
    torch.set_num_threads(args.eval_threads)
    inherited = supernet_estimates(net, recipe, {
        name: choice_of(path, space) for name, path in configs.items()}, work / "inherited.json")
    train.wait()
    report(work, configs, inherited, train.asked, train.trained_as, table, target, budget, times, args)
    return 0


def report(work, configs, inherited, jobs, trained_as, table, target, budget, times, args) -> None:
    by_seed: dict[tuple[str, str], dict[int, float]] = {}   # (candidate trained, init) -> seed -> top-1
    for name, init, seed in jobs:
        out = work / "train" / f"{trained_as[name]}-{init}-s{seed}"
        if trained(out, args.epochs):
            hist = checkpoint.load(out / MODEL, (checkpoint.MODEL_FORMAT,))["history"]
            by_seed.setdefault((trained_as[name], init), {})[seed] = hist[-1]["ema_top1"]
    top1 = {(name, init): list(by_seed[(trained_as[name], init)].values())
            for name in configs for init in ("scratch", "inherited") if (trained_as[name], init) in by_seed}
    untrained = [name for name in configs if (name, "scratch") not in top1]
    rows = []
    order = ["S", "Sps", "Sp", "O", "Ops", "L1"]
    for name, path in sorted(configs.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 9, kv[0][0],
                                                               int(kv[0][1:]) if kv[0][1:].isdigit() else 0)):
        if name in untrained:
            continue
        cfg = ArchConfig.load(path)
        c = costs(cfg)
        scores = top1[(name, "scratch")]
        rows.append({"candidate": name, "ms": round(table.predict(cfg), 4),
                     **{f"inherited_{e}": inherited[e][name][0] for e, _, _ in ESTIMATES},
                     "inherited_loss": inherited["slim"][name][1],
                     "top1": statistics.mean(scores), "spread": max(scores) - min(scores), "seeds": len(scores),
                     "per_seed": " ".join(f"{v:.2f}" for v in scores),
                     "params_m": c["params_deploy"] / 1e6, "macs_g": c["macs"] / 1e9,
                     "mb3d": sum(b.kind == "mb3d" for st in cfg.stages for b in st.blocks), "config": cfg.summary()})

    step_rows = [r for r in rows if r["candidate"].startswith("C")]
    # each network once: a candidate with another's config would count its pair twice
    equal_latency = [r for r in rows if not r["candidate"].startswith("C") and trained_as[r["candidate"]] == r["candidate"]]
    randoms = sorted(r["top1"] for r in rows if r["candidate"].startswith("R"))
    by_name = {r["candidate"]: r for r in rows}
    s_inh = top1.get(("S", "inherited"), [])
    o_meta = ArchConfig.load(configs["O"]).meta
    data_label = "Fashion-MNIST" if args.data.startswith("fashion-mnist") else args.data
    lines = [f"# Does the search beat hand design? ({data_label}, equal latency on iphone12)", "",
             "```", "python experiments/search_quality/run.py "
             + (f"--data {args.data} " if args.data != "fashion-mnist" else "") + f"--supernet-epochs {args.supernet_epochs} --epochs "
             f"{args.epochs} --img-size {args.img_size} --randoms {args.randoms} --seeds {args.seeds} "
             + (f"--all-seeds {args.all_seeds} " if args.all_seeds > 1 else "")
             + (f"--mixing {args.mixing} " if args.mixing else "")
             + (f"--variants {args.variants} " if args.variants != ",".join(SLIM_VARIANTS) else "")
             + (f"--inherited-seeds {args.inherited_seeds} " if args.inherited_seeds != 1 else "") + f"--step-candidates {args.step_candidates} --batch-size {args.batch_size} --jobs {args.jobs}", "```", "",
             f"Trained on {torch.cuda.get_device_name() if torch.cuda.is_available() else 'the CPU'}.", "",
             f"Target T = {target:g} ms (EfficientFormer-L1 at 10 classes on the shipped iphone12 table); window "
             f"{target * (1 - WINDOW):.4f}–{target:g} ms. Slimming (S) evaluated {budget} sub-networks; the search had "
             "the same budget. Trained top-1: EMA weights on all 10,000 validation images, mean over seeds.", "",
             "| candidate | predicted ms | inherited top-1 | trained top-1 | spread | seeds | params M | MACs G | #MB3D | config |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['candidate']} | {r['ms']:.4f} | {r['inherited_slim']:.2f} | {r['top1']:.2f} | "
                     f"{r['spread']:.2f} | {r['seeds']} | {r['params_m']:.2f} | {r['macs_g']:.3f} | {r['mb3d']} | `{r['config']}` |")
    lines += ["", f"O is search trial {o_meta.get('trial')}: " + (
        "the most accurate trial inside the window." if o_meta.get("in_window") else
        "no trial fell inside the window, so the most accurate one under T (faster than the window).")]
    several = [f"{n} {', '.join(f'{v:.2f}' for v in top1[(n, 'scratch')])}" for n in configs
               if trained_as[n] == n and len(top1.get((n, "scratch"), [])) > 1]
    if several:
        lines += ["", f"Per seed: {'; '.join(several)}."]
    if len(top1.get(("S", "scratch"), [])) > 1 and len(top1.get(("L1", "scratch"), [])) > 1:
        from scipy.stats import ttest_ind
        s_l1 = ttest_ind(top1[("S", "scratch")], top1[("L1", "scratch")], equal_var=False)
        lines += ["", f"S − L1: {by_name['S']['top1'] - by_name['L1']['top1']:+.2f} points, Welch's t-test "
                  f"p = {s_l1.pvalue:.3f} (two-sided)."]
    aliases = [f"{n} has {a}'s config" for n, a in trained_as.items() if a != n]
    if aliases:
        lines += ["", f"Trained once for both (the same network): {'; '.join(aliases)}."]
    if s_inh:
        lines += ["", f"S trained from its inherited weights: {statistics.mean(s_inh):.2f} "
                  f"(over {len(s_inh)} seed{'s' if len(s_inh) > 1 else ''})."]
    if untrained:
        lines += ["", f"Not trained yet (a resume trains them): {', '.join(untrained)}."]
    lines += ["", f"Rank correlation of the supernet's estimate with trained top-1, the {len(equal_latency)} "
              "distinct networks at the target (all but the step candidates; a duplicate counted once):", "",
              "| estimate | Kendall τ | Spearman ρ |", "|---|---|---|", *rank_lines(equal_latency)]
    ceiling = tau_ceiling([[float(v) for v in r["per_seed"].split()] for r in equal_latency])
    if ceiling:
        lines += ["", describe(ceiling) + " (`tau_ceiling.py` here.)"]
    if len(step_rows) >= 3:
        lines += ["", f"The same over one slimming step's {len(step_rows)} candidates "
                  f"({ArchConfig.load(configs[step_rows[0]['candidate']]).meta.get('step')}):", "",
                  "| estimate | Kendall τ | Spearman ρ |", "|---|---|---|", *rank_lines(step_rows)]
    lines += ["", "Verdict figures: " + ", ".join(
        f"{n} {by_name[n]['top1']:.2f}" + (f" (±{by_name[n]['spread'] / 2:.2f})" if by_name[n]["seeds"] > 1 else "")
        for n in ("S", "Sps", "Sp", "O", "Ops", "L1") if n in by_name) +
        (f"; median random {statistics.median(randoms):.2f} (randoms {randoms[0]:.2f}–{randoms[-1]:.2f})."
         if randoms else "; no random config trained yet."), "",
        "Wall time per phase (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()), ""]
    io.write_text(Path(args.results) / "result.md", "\n".join(lines))
    io.write_csv(Path(args.results) / "candidates.csv", rows)
    _plot(rows, target, Path(args.results))
    print("\n".join(lines))


def _plot(rows, target, folder: Path) -> None:
    with io.png_figure(folder / "latency_vs_top1.png", figsize=(6, 4)) as (fig, ax):
        style = {"S": ("C3", "*", 14), "Sps": ("C5", "P", 10), "Sp": ("C4", "P", 10), "O": ("C2", "D", 8),
                 "Ops": ("C2", "d", 8), "L1": ("C0", "s", 9)}
        for r in rows:
            color, marker, size = style.get(r["candidate"], ("C7" if r["candidate"][0] == "R" else "C1", "o", 6))
            ax.errorbar(r["ms"], r["top1"], yerr=r["spread"] / 2 if r["spread"] else None, fmt=marker, c=color,
                        ms=size, capsize=3)
            ax.annotate(r["candidate"], (r["ms"], r["top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axvline(target, ls="--", c="grey", lw=0.8)
        ax.set(xlabel="predicted latency on iphone12 (ms)", ylabel="trained top-1 (%)",
               title="equal latency: S/Sps/Sp slim, O/Ops search, L1 published, R random, C one step")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        fig.tight_layout()


if __name__ == "__main__":
    sys.exit(run())
