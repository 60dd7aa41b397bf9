"""A trained supernet opened for slimming or search, with every output written.

`SupernetSession.open` gathers what ``nas slim``, ``nas search`` and the studies share: the
supernet (eval mode, channels in the order asked), the device's latency table and predictor
(``lut.store``), and the evaluator on fixed calibration/validation subsets. `SupernetSession.slim`
runs the iterative slimming (``nas.slim``) and writes, per target, the config and its inherited
weights, then the trajectory and its plot; `SupernetSession.search` runs the NSGA-II search
(``nas.search``) and writes its front; `slim_every_family` slims each family's newest supernet
to the same targets and tabulates them.

A bad parameter value is a ``ParameterError`` naming the parameter (``trials``, ``storage``,
``study_name``); the CLI says it with the flag that sets it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from lut import store
from lut.table import LatencyTable
from nas import checkpoint, runs
from nas.errors import ParameterError, UserError
from nas.evaluate import Evaluator
from nas.slim import (LAST_STEPS, PROPOSALS, SlimResult, UnreachableTarget, channel_order, checked_targets, slim,
                      write_trajectory)
from nas.supernet_training import Recipe
from supernets.config import ArchConfig


def targets_label(targets: list[float]) -> str:
    """``7-3-1.6ms`` of checked targets (largest first)."""
    return "-".join(f"{t:g}" for t in targets) + "ms"


@dataclass
class Emitted:
    """What `SupernetSession.slim` wrote."""
    configs: list[Path]          # one per target, largest target first
    weights: list[Path]          # the configs' inherited weights, beside them
    trajectory: list[Path]       # the trajectory CSV and its plot
    result: SlimResult
    table: LatencyTable | None = None   # the table that priced it
    targets: list[float] = field(default_factory=list)
    # per target, the predicted latency slimmed to: the target itself, or with a confidence the
    # target over the table's error ratio at that quantile (the bound then meets the target)
    slimmed_to: list[float] = field(default_factory=list)

    def step_at(self, target_ms: float):
        """The (choice, step) emitted for `target_ms`."""
        return self.result.at(self.slimmed_to[self.targets.index(target_ms)] if self.targets else target_ms)


@dataclass
class Searched:
    """What `SupernetSession.search` found and wrote."""
    result: object               # nas.search.SearchResult: the study, its feasible front, the best member
    out_dir: Path
    written: list[Path]          # front configs (+ weights), trials.csv, pareto.png
    best_per_target: list[dict] = field(default_factory=list)   # with several targets: one row each


@dataclass
class SupernetSession:
    ckpt_path: Path
    net: object                  # Supernet, in eval mode, channels ordered as asked
    device: str                  # the device name the table prices
    table: LatencyTable
    predictor: Callable          # config -> ms
    evaluator: Evaluator         # sub-network -> Score
    data: str                    # the supernet's data source

    @classmethod
    def open(cls, *, supernet: str | os.PathLike | None = None, runs_dir: str | os.PathLike = "runs",
             family: str | None = None, device: str = "cpu", tables_dir: str | os.PathLike | None = None,
             threads: int = 2, calib_images: int | None = None, val_images: int | None = None, seed: int = 0,
             channel_order_rule: str = "auto", progress: bool = True) -> "SupernetSession":
        """`supernet` (a checkpoint), else the newest finished one of `family` under `runs_dir`."""
        ckpt_path = Path(supernet) if supernet else runs.latest_supernet(runs_dir, family or runs.DEFAULT_FAMILY)
        ckpt = checkpoint.load(ckpt_path)
        net = checkpoint.build_supernet(ckpt)
        if family and family != net.space.family:
            raise UserError(f"--supernet {ckpt_path} is a {net.space.family} supernet, not --family {family}; "
                            "drop --family or pass that family's supernet")
        tables_dir = Path(tables_dir) if tables_dir is not None else Path(runs_dir) / "tables"
        table, predictor = store.open_predictor(device, net.space.resolution, tables_dir, progress)
        recipe = Recipe.from_dict(ckpt["recipe"])
        torch.set_num_threads(threads)
        evaluator = Evaluator.of_data(recipe.data, recipe.img_size, recipe.seed, calib_images, val_images, seed)
        net.eval()
        if channel_order(channel_order_rule, net) == "importance":
            net.reorder_channels()
        return cls(ckpt_path, net, device, table, predictor, evaluator, recipe.data)

    @property
    def family(self) -> str:
        return self.net.space.family

    def save_inherited(self, config: ArchConfig, path: Path) -> Path:
        """The sub-network of `config` with inherited weights, BN recalibrated as it was scored."""
        model = self.evaluator.recalibrate(self.net.subnet(config))
        return checkpoint.save_model(path, config, model, self.net.img_size, data=self.data)

    def slim(self, targets: list[float], out_dir: str | os.PathLike, *, proposals: str = PROPOSALS[0],
             last_step: str = LAST_STEPS[0], ray_address: str | None = None, threads: int = 2,
             confidence: float | None = None) -> Emitted:
        """Slim to every target; write each target's config (``FAMILY@DEVICE-Tms.yaml``) with its
        inherited weights beside it, then the trajectory. With `ray_address` each step's candidates
        are scored as Ray tasks (`threads` each); the trajectory is the same. With `confidence`
        (estimated tables) each config's latency bound at that confidence (`upper_ratio`), not its
        prediction, meets its target. The caller makes the
        files all-or-nothing (``io.all_or_nothing``) where a failure must leave none of them."""
        from nas import cluster

        targets = checked_targets(targets)
        out_dir = Path(out_dir)
        ratio = self.upper_ratio(confidence) if confidence is not None else 1.0
        slimmed_to = [t / ratio for t in targets]
        with cluster.connected(ray_address) as on_ray:
            evaluate_map = cluster.evaluate_map(self.net, self.evaluator, threads) if on_ray else map
            try:
                result = slim(self.net, self.predictor, self.evaluator, slimmed_to, evaluate_map=evaluate_map,
                              proposals=proposals, last_step=last_step)
            except UnreachableTarget as e:
                if confidence is None:
                    raise
                target = targets[slimmed_to.index(e.target_ms)] if e.target_ms in slimmed_to else targets[-1]
                raise UnreachableTarget(target, e.floor_ms, f"--confidence {confidence:g} bounds a prediction at "
                                        f"x{ratio:.2f}: meeting {target:g} ms needs {target / ratio:.3f} ms predicted, "
                                        f"below the smallest reachable {e.floor_ms:.3f} ms; lower --confidence or "
                                        f"raise --target-ms to >= {e.floor_ms * ratio:.3f}") from None
        configs, weights = [], []
        for t, inner in zip(targets, slimmed_to):
            choice, step = result.at(inner)
            name = f"{self.family}@{self.device}-{t:g}ms"
            bound = {} if confidence is None else {"confidence": confidence,
                                                   "upper_ms": round(step.latency_ms * ratio, 4)}
            config = choice.to_config(self.net.space, num_classes=self.net.num_classes).replace(
                name=name,
                meta={"device": self.device, "target_ms": t, "predicted_ms": round(step.latency_ms, 4), **bound,
                      "inherited_top1": round(step.accuracy, 2), "supernet": str(self.ckpt_path),
                      **store.provenance(self.table), "steps": step.step, "proposals": proposals,
                      "last_step": last_step})
            yaml_path = out_dir / f"{name}.yaml"
            # weights first, the YAML last: a config on disk always has its weights beside it
            pt = self.save_inherited(config, yaml_path.with_suffix(".pt"))
            try:
                config.save(yaml_path)
            except BaseException:
                pt.unlink(missing_ok=True)
                raise
            configs.append(yaml_path)
            weights.append(pt)
        stem = out_dir / f"{self.family}@{self.device}-{targets_label(targets)}"
        trajectory = write_trajectory(result, stem, slimmed_to, f"{self.family} @ {self.device}: slimming to "
                                      f"{', '.join(f'{t:g}' for t in targets)} ms"
                                      + (f" at {confidence:g} confidence" if confidence is not None else ""))
        as_config = lambda choice: choice.to_config(self.net.space, num_classes=self.net.num_classes)  # noqa: E731
        first, last = as_config(self.net.initial_choice()), as_config(result.at(slimmed_to[-1])[0])
        trajectory = [*trajectory, self._breakdown([(first, "start (step 0)"), (last, f"{targets[-1]:g} ms target")],
                                                   stem.with_name(stem.name + ".breakdown.png"))]
        return Emitted(configs, weights, trajectory, result, self.table, targets, slimmed_to)

    def _breakdown(self, configs: list[tuple[ArchConfig, str]], path: Path) -> Path:
        """Where the milliseconds of the trajectory's first and last step go (`lut.breakdown`)."""
        from lut import breakdown, estimate

        weights = estimate.CostModel.load(estimate.cost_model_path(
            self.table.path.parent if self.table.path is not None else None)).weights
        rows = [breakdown.breakdown(self.table, cfg, weights, label) for cfg, label in configs]
        return breakdown.draw(rows, f"{self.device}@{self.net.space.resolution}", path)

    def upper_ratio(self, confidence: float) -> float:
        """The factor on a predicted latency that the true one stays under with probability
        `confidence` (one-sided), from the table's out-of-sample estimate errors."""
        if not 0 < confidence < 1:
            raise UserError(f"--confidence {confidence:g} is not a probability; give one in (0, 1), e.g. 0.9")
        start = self.net.initial_choice().to_config(self.net.space, num_classes=self.net.num_classes)
        self.predictor(start)   # fills the ops the table lacks, so that their kind (timed, estimated) is known
        if not self.table.estimated(start):
            raise UserError(f"--confidence bounds an estimated latency, and {self.device}'s table is timed "
                            f"({self.table.trust(start)}); slim without it, or to a lower --target-ms")
        ratio = self.table.error_ratio(confidence)
        if ratio is None:
            raise UserError(f"{self.table.path} records no estimate error to bound; refresh it with "
                            f"`nas lut estimate --device {self.device}`, then slim with --confidence")
        return ratio

    def search(self, targets: list[float], out_dir: str | os.PathLike | None = None, *, trials: int = 60,
               storage: str | None = None, study_name: str | None = None, seed: int = 0, population: int = 16,
               ray_address: str | None = None, workers: int = 1, threads: int = 2, progress: bool = True,
               log: Callable[[str], None] = print) -> Searched:
        """NSGA-II search under the largest target (``nas.search``): in this process, or by
        `workers` Ray workers sharing the study when `ray_address` connects. Writes the feasible
        front (configs and inherited weights), ``trials.csv`` and ``pareto.png`` to `out_dir`;
        with several targets also ``best_per_target.csv`` (each smaller one picks from the front)."""
        from tqdm.auto import tqdm

        from nas import cluster, search
        from nas.core import io

        if trials < 1:
            raise ParameterError("trials", trials, "need at least one trial")
        if workers < 1:
            raise ParameterError("workers", workers, "need at least one worker")
        targets = checked_targets(targets)
        budget = targets[0]   # the constraint; each smaller target picks from the same front
        stem = f"{self.family}@{self.device}-{targets_label(targets)}"
        out_dir = Path(out_dir) if out_dir else self.ckpt_path.parent / "search" / stem
        name = study_name or stem
        try:
            study = search.open_study(search.open_storage(storage, out_dir), name, seed=seed, population=population)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy, drivers and Optuna raise many types for a bad URL
            raise ParameterError("storage", storage, f"cannot open the study ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:120]}); give an Optuna storage URL such as "
                                 "sqlite:///study.db") from None
        log(f"searching {self.family} supernet {self.ckpt_path} for {self.device}@{self.net.space.resolution} under "
            f"{budget:g} ms: {trials} trials, NSGA-II, study {stem!r} in {storage or out_dir / search.JOURNAL}")
        try:
            search.claim(study, budget)
            with cluster.connected(ray_address) as on_ray:
                if on_ray:
                    log(f"{workers} Ray workers share the study")
                    cluster.search_workers(workers, self.net, self.predictor, self.evaluator, budget,
                                           storage=storage, out_dir=out_dir, study_name=name, seed=seed,
                                           population=population, trials=trials, threads=threads)
                    result = search.front_of(study)
                else:
                    with tqdm(total=trials, desc="trials", unit="trial", disable=not progress, leave=False) as bar:
                        result = search.search(self.net, self.predictor, self.evaluator, budget, study,
                                               trials=trials, progress=lambda t: bar.update(1))
        except ValueError as e:   # a study of another budget, space or objectives under that name
            raise ParameterError("study_name", name, f"{e}; pick another study name or storage") from None
        meta = {"device": self.device, "target_ms": budget, "supernet": str(self.ckpt_path),
                **store.provenance(self.table), "study": name}
        written = search.write_front(result, self.net, out_dir, stem, meta, save_weights=self.save_inherited)
        rows = []
        if len(targets) > 1:
            for t in targets:
                best = max((m for m in result.front if m.values[1] <= t), key=lambda m: m.values[0], default=None)
                rows.append({"target_ms": t, "trial": best.number if best else "",
                             "inherited_top1": round(best.values[0], 3) if best else "",
                             "predicted_ms": round(best.values[1], 4) if best else "",
                             "config": str(out_dir / "pareto" / f"{stem}-t{best.number}.yaml") if best else ""})
            written.insert(0, io.write_csv(out_dir / "best_per_target.csv", rows))
        return Searched(result, out_dir, written, rows)


FAMILIES_FIELDS = ["family", "target_ms", "predicted_ms", "latency_trust", "swish_extra_ms", "inherited_top1", "params_m",
                   "macs_g", "steps", "floor_ms", "status", "config"]


def slim_every_family(families: list[str], targets: list[float], out_dir: str | os.PathLike, *,
                      runs_dir: str | os.PathLike, device: str,
                      slim_one: Callable[[str, Path], Emitted] | None = None, log: Callable[[str], None] = print,
                      **session_options) -> tuple[list[dict], Path, Path]:
    """Each family's newest finished supernet under `runs_dir` slimmed to the same targets by
    ``slim_one(family, checkpoint)`` (which writes into `out_dir`; by default a `SupernetSession`
    opened with `session_options`), then ``families.csv`` and ``families.png`` there. A family
    that cannot reach a target is listed with its floor; one without a trained supernet is
    listed as such. Returns the rows and the two files."""
    from lut import breakdown
    from nas.report import costs
    from nas.slim import UnreachableTarget
    from nas.core import io

    targets = checked_targets(targets)
    out_dir = Path(out_dir)
    if slim_one is None:
        def slim_one(family: str, ckpt: Path) -> Emitted:
            session = SupernetSession.open(supernet=ckpt, runs_dir=runs_dir, device=device, **session_options)
            return session.slim(targets, out_dir)
    rows, trajectories = [], {}
    for family in families:
        base = {"family": family, "predicted_ms": "", "latency_trust": "", "swish_extra_ms": "", "inherited_top1": "",
                "params_m": "", "macs_g": "", "steps": "", "floor_ms": "", "config": ""}
        try:
            ckpt = runs.latest_supernet(runs_dir, family)
        except UserError:
            rows += [{**base, "target_ms": t, "status": "no trained supernet"} for t in targets]
            log(f"{family}: no trained supernet under {runs_dir}/ (nas train-supernet --family {family}); listed, "
                "not slimmed")
            continue
        log(f"== {family}")
        try:
            emitted = slim_one(family, ckpt)
        except UnreachableTarget as e:
            rows += [{**base, "target_ms": t, "floor_ms": round(e.floor_ms, 4),
                      "status": "target below the family's floor" if t < e.floor_ms else "not slimmed (the ladder's "
                      "lowest rung is below the floor)"} for t in targets]
            log(f"{family}: {e}; listed with its floor")
            continue
        trajectories[family] = [(s.latency_ms, s.accuracy) for s in emitted.result.steps]
        for t, path in zip(targets, emitted.configs):
            _, step = emitted.step_at(t)
            config = ArchConfig.load(path)
            c = costs(config)
            rows.append({**base, "target_ms": t, "predicted_ms": round(step.latency_ms, 4),
                         "latency_trust": emitted.table.trust(config, step.latency_ms) if emitted.table else "",
                         "swish_extra_ms": breakdown.swish_extra_ms(emitted.table, config),
                         "inherited_top1": round(step.accuracy, 2), "params_m": round(c["params_deploy"] / 1e6, 3),
                         "macs_g": round(c["macs"] / 1e9, 3), "steps": step.step, "status": "ok", "config": str(path)})
    csv_path = io.write_csv(out_dir / "families.csv", rows, FAMILIES_FIELDS)
    return rows, csv_path, _plot_families(rows, trajectories, targets, out_dir / "families.png", device)


def _plot_families(rows: list[dict], trajectories: dict, targets: list[float], path: Path, device: str) -> Path:
    from nas.core import io

    with io.png_figure(path, figsize=(6.8, 4.4)) as (fig, ax):
        for n, (family, points) in enumerate(trajectories.items()):
            color = f"C{n}"
            ax.plot([p[0] for p in points], [p[1] for p in points], "-", lw=1, color=color, alpha=0.6)
            emitted = [r for r in rows if r["family"] == family and r["status"] == "ok"]
            ax.plot([r["predicted_ms"] for r in emitted], [r["inherited_top1"] for r in emitted], "*", ms=11,
                    color=color, label=family)
        for t in targets:
            ax.axvline(t, ls="--", color="gray", lw=1)
        ax.invert_xaxis()
        ax.set(xlabel=f"predicted latency on {device} (ms)", ylabel="top-1 with inherited weights (%)",
               title=f"every family at {', '.join(f'{t:g}' for t in targets)} ms (lines: slimming trajectories)")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        if trajectories:    # no family slimmed (every target below every floor): nothing to label
            ax.legend(fontsize=8)
        fig.tight_layout()
    return path


@dataclass
class QuickStarted:
    """What `quickstart` made."""
    supernet: Path
    table: Path
    target_ms: float
    emitted: Emitted


def quickstart(runs_dir: str | os.PathLike = "runs", *, epochs: int = Recipe.epochs, target_ms: float | None = None,
               target_fraction: float = 0.6, rounds: int = 7, calibration_samples: int = 12,
               calib_images: int | None = None, val_images: int | None = None, progress: bool = True,
               log: Callable[[str], None] = print) -> QuickStarted:
    """`nas quickstart`: train-supernet, lut build and slim on the embedded defaults (the library's
    defaults, which are also each command's flag defaults), on this machine's CPU. The target is
    `target_ms`, else `target_fraction` of the full supernet's predicted latency. `rounds` and
    `calibration_samples` are `lut build`'s, `calib_images` and `val_images` `slim`'s."""
    from nas.train import supernet_recipe, train_supernet_run
    from nas.core import io

    store.check_timing(rounds, calibration_samples)   # before a minute of training
    recipe = supernet_recipe(epochs=epochs)
    ckpt_path = train_supernet_run(recipe, runs.new_run_dir(runs_dir, recipe.family), progress=progress, log=log)
    tables_dir = Path(runs_dir) / "tables"
    table_path = store.build_tables("cpu", [recipe.family], space=recipe.space, tables_dir=tables_dir,
                                    rounds=rounds, calibration_samples=calibration_samples, progress=progress,
                                    log=log)[-1]
    session = SupernetSession.open(supernet=ckpt_path, runs_dir=runs_dir, device="cpu", tables_dir=tables_dir,
                                   calib_images=calib_images, val_images=val_images, progress=progress)
    if target_ms is None:
        net = session.net
        start_ms = session.predictor(net.initial_choice().to_config(net.space, num_classes=net.num_classes))
        target_ms = round(start_ms * target_fraction, 1)
        log(f"target: {target_ms:g} ms ({target_fraction:g} x the full supernet's {start_ms:.1f} ms)")
    log(f"slimming to {target_ms:g} ms")
    with io.all_or_nothing():
        emitted = session.slim([target_ms], ckpt_path.parent / "slim")
    return QuickStarted(ckpt_path, table_path, target_ms, emitted)
