"""Multi-objective search over a family's space with Optuna (NSGA-II): the alternative to slimming.

Objectives: inherited top-1 accuracy of the sub-network (supernet weights, BN recalibrated, the
same fixed subsets as ``nas slim``) ↑ and the table's predicted latency ↓; the budget is a
constraint (``constraints_func``: latency - target <= 0), so infeasible trials still teach the
sampler without ever entering the front (multi-objective studies cannot prune).

A trial's parameters have fixed distributions, as NSGA-II's crossover needs: per stage a width,
a depth (``min_blocks`` .. ``slots``), a kind per slot and a value per elastic knob. A choice is
read off them like ``random_choice`` draws one: the first `depth` kinds, with the family's token
blocks moved after its map blocks. Every trial is therefore a valid config.

Storage: a journal file in the output directory by default (two processes creating one fresh
SQLite study race on its schema; a journal has no such race and is about 7x faster for
concurrent workers), or any Optuna storage URL (``sqlite:///...``, ``postgresql://...``).
The study is created (or loaded) before any trial runs, and workers stop when the study holds
``trials`` finished trials, so an interrupted search resumes and concurrent searches on one study
share the budget.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna

from nas.evaluate import Evaluator
from nas.core import io
from supernets.config import IDENTITY, ArchConfig, Choice, ConfigError, SearchSpace
from supernets.registry import get_family
from supernets.supernet import Supernet

JOURNAL = "study.journal"


def open_storage(storage: str | None, out_dir: Path):
    """An Optuna storage: the URL given, else a journal file in `out_dir`."""
    if storage:
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    out_dir.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(out_dir / JOURNAL)))


def choice_of(params: dict, space: SearchSpace) -> Choice:
    """The Choice a trial's parameters encode (see the module docstring)."""
    token_kinds = set(get_family(space.family).token_kinds)
    widths, kinds, knobs = [], [], []
    for j, stage in enumerate(space.stages):
        widths.append(params[f"s{j}.width"])
        depth = params[f"s{j}.depth"]
        row = [params[f"s{j}.slot{i}"] for i in range(depth)]
        row = [k for k in row if k not in token_kinds] + [k for k in row if k in token_kinds]
        kinds.append(tuple(row) + (IDENTITY,) * (stage.slots - depth))
        knobs.append(tuple(sorted((k, params[f"s{j}.{k}"]) for k in stage.knobs)))
    return Choice(tuple(widths), tuple(kinds), tuple(knobs))


def suggest(trial: optuna.Trial, space: SearchSpace) -> Choice:
    for j, stage in enumerate(space.stages):
        trial.suggest_categorical(f"s{j}.width", list(space.widths(j)))
        trial.suggest_int(f"s{j}.depth", stage.min_blocks, stage.slots)
        kinds = [k for k in stage.choices if k != IDENTITY]
        for i in range(stage.slots):
            trial.suggest_categorical(f"s{j}.slot{i}", kinds)
        for name, values in stage.knobs.items():
            trial.suggest_categorical(f"s{j}.{name}", list(values))
    return choice_of(trial.params, space)


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return bool(trial.constraints) and all(v <= 0 for v in trial.constraints.values())


@dataclass
class SearchResult:
    study: optuna.Study
    front: list[optuna.trial.FrozenTrial]    # feasible Pareto-optimal trials, fastest first
    best: optuna.trial.FrozenTrial | None    # the most accurate feasible trial


def open_study(storage, name: str, *, seed: int = 0, population: int = 16) -> optuna.Study:
    """Create or load the study (before any worker runs a trial: no creation race)."""
    optuna.logging.set_verbosity(logging.WARNING)
    # constraints come from trial.set_constraint (Optuna 5: constraints_func is deprecated)
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    return optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"],
                               sampler=sampler, load_if_exists=True)


def claim(study: optuna.Study, target_ms: float) -> None:
    """Bind the study to its budget: trials under another budget would not be comparable."""
    known = study.user_attrs.get("target_ms")
    if known is not None and known != target_ms:
        raise ValueError(f"the study searched under {known:g} ms, not {target_ms:g} ms")
    study.set_user_attr("target_ms", target_ms)


def run_trials(net: Supernet, latency: Callable[[ArchConfig], float], evaluator: Evaluator, target_ms: float,
               study: optuna.Study, *, trials: int,
               progress: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> None:
    """Run trials until the study holds `trials` finished ones (shared by every worker of it)."""
    claim(study, target_ms)
    num_classes = net.num_classes

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        choice = suggest(trial, net.space)
        try:
            config = choice.to_config(net.space, num_classes)
        except ConfigError as e:   # a combination the family refuses: never feasible
            trial.set_constraint("over_budget_ms", math.inf)
            trial.set_user_attr("invalid", str(e))
            return 0.0, math.inf
        ms = latency(config)
        trial.set_constraint("over_budget_ms", ms - target_ms)
        trial.set_user_attr("config", config.summary())
        return evaluator(net.subnet(choice)).accuracy, ms

    done = _finished(study)
    if done < trials:
        study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(trials, states=_FINISHED)]
                       + ([lambda s, t: progress(t)] if progress else []), n_trials=trials - done)


def front_of(study: optuna.Study) -> SearchResult:
    """The study's feasible Pareto front (one trial per architecture) and its most accurate member."""
    front, seen = [], set()
    for t in sorted((t for t in study.best_trials if feasible(t)), key=lambda t: (t.values[1], t.number)):
        if t.user_attrs["config"] not in seen:   # the same architecture drawn twice is one front member
            seen.add(t.user_attrs["config"])
            front.append(t)
    best = max(front, key=lambda t: (t.values[0], -t.values[1]), default=None)
    return SearchResult(study, front, best)


def search(net: Supernet, latency: Callable[[ArchConfig], float], evaluator: Evaluator, target_ms: float,
           study: optuna.Study, *, trials: int,
           progress: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> SearchResult:
    """Run trials in this process until the study holds `trials` finished ones; return its front."""
    run_trials(net, latency, evaluator, target_ms, study, trials=trials, progress=progress)
    return front_of(study)


_FINISHED = (optuna.trial.TrialState.COMPLETE,)


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=_FINISHED))


def write_front(result: SearchResult, net: Supernet, out_dir: Path, stem: str, meta: dict,
                save_weights: Callable[[ArchConfig, Path], Path] | None = None) -> list[Path]:
    """Each front member as an ArchConfig YAML (and, with `save_weights`, its inherited weights
    next to it), every trial in a CSV, and ``pareto.png``."""
    written = []
    for t in result.front:
        cfg = choice_of(t.params, net.space).to_config(net.space, net.num_classes).replace(
            name=f"{stem}-t{t.number}", meta={**meta, "trial": t.number, "inherited_top1": round(t.values[0], 2),
                                              "predicted_ms": round(t.values[1], 4)})
        path = out_dir / "pareto" / f"{stem}-t{t.number}.yaml"
        cfg.save(path)
        written.append(path)
        if save_weights is not None:
            written.append(save_weights(cfg, path.with_suffix(".pt")))
    stale = {p for ext in ("yaml", "pt") for p in (out_dir / "pareto").glob(f"{stem}-t*.{ext}")}
    for path in stale - set(written):   # left by an earlier run
        path.unlink()
    front_ids = {t.number for t in result.front}
    rows = [{"trial": t.number, "accuracy": round(t.values[0], 3), "latency_ms": round(t.values[1], 4),
             "feasible": feasible(t), "pareto": t.number in front_ids, "config": t.user_attrs.get("config", "")}
            for t in result.study.get_trials(deepcopy=False, states=_FINISHED)]
    written.append(io.write_csv(out_dir / "trials.csv", rows))
    written.append(_plot(rows, meta["target_ms"], out_dir / "pareto.png", stem))
    return written


def _plot(rows: list[dict], target_ms: float, path: Path, title: str) -> Path:
    with io.png_figure(path, figsize=(5.6, 4.2)) as (fig, ax):
        finite = [r for r in rows if math.isfinite(r["latency_ms"])]
        ax.scatter([r["latency_ms"] for r in finite], [r["accuracy"] for r in finite], s=10, c="0.7", label="trials")
        front = sorted((r for r in finite if r["pareto"]), key=lambda r: r["latency_ms"])
        ax.plot([r["latency_ms"] for r in front], [r["accuracy"] for r in front], "o-", c="C3", ms=4,
                label="Pareto front (within budget)")
        ax.axvline(target_ms, ls="--", c="k", lw=0.8, label=f"target {target_ms:g} ms")
        ax.set(xlabel="predicted latency (ms)", ylabel="inherited top-1 (%)", title=title)
        ax.legend(fontsize=7)
        fig.tight_layout()
    return path
