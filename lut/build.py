"""Filling latency tables: which ops a space can need, measuring them, timing whole models."""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import itertools
import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import yaml
from tqdm.auto import tqdm

from lut import backends, graph, measure
from lut.table import ANY_FAMILY, CacheModel, LatencyTable, boundary_mb
from nas.core import io
from supernets.config import IDENTITY, ArchConfig, Choice, SearchSpace
from supernets.layers import count_params, reparameterize
from supernets.registry import OpNode, get_family, random_choice


def covering_configs(space: SearchSpace, num_classes: int | None = None) -> Iterable[ArchConfig]:
    """Configs whose op keys together cover every key any config of the space can produce.

    A key depends only on local facts (kind, width, stage knobs, grid, what the previous stage
    hands on), so it suffices to vary one stage's (width, knob values, kind) at a time and every
    pair of adjacent stages' widths with either stage's knob values (a knob may set the width a
    stage hands on, FMViT's ``out_width``, or how a stage takes it in, MobileViT's MV2 expansion).
    """
    kinds = [[k for k in s.choices if k != IDENTITY] for s in space.stages]
    base = Choice(tuple(s.max_width for s in space.stages),
                  tuple((ks[0],) * s.slots for ks, s in zip(kinds, space.stages)))
    for j, s in enumerate(space.stages):
        knob_values = [dict(zip(s.knobs, combo)) for combo in itertools.product(*s.knobs.values())]
        for w, knobs, kind in itertools.product(space.widths(j), knob_values, kinds[j]):
            choice = base.replace_width(j, w)
            for name, value in knobs.items():
                choice = choice.replace_knob(space, j, name, value)
            row = list(choice.kinds)
            row[j] = (kind,) * s.slots
            yield Choice(choice.widths, tuple(row), choice.knobs).to_config(space, num_classes)
    for j in range(1, len(space.stages)):
        # the ops between stages j-1 and j: both widths with either stage's knob values (the
        # previous stage's may set what it hands on, this stage's how it takes it in: MobileViT's
        # MV2 expansion of the downsampling block)
        for side in (j - 1, j):
            knobs = space.stages[side].knobs
            for a, b, combo in itertools.product(space.widths(j - 1), space.widths(j), itertools.product(*knobs.values())):
                choice = base.replace_width(j - 1, a).replace_width(j, b)
                for name, value in zip(knobs, combo):
                    choice = choice.replace_knob(space, side, name, value)
                yield choice.to_config(space, num_classes)


def ops_for(configs: Iterable[ArchConfig]) -> dict[str, OpNode]:
    """key -> op (first occurrence) over the configs."""
    out: dict[str, OpNode] = {}
    for cfg in configs:
        for op in graph.ops(cfg):
            out.setdefault(op.key, op)
    return out


def fill(table: LatencyTable, ops: dict[str, OpNode], *, calibration: dict[str, ArchConfig] | None = None,
         threads: int = 1, rounds: int = 5, calls: int = 7, save: bool = True, desc: str = "measuring",
         progress: bool = True) -> dict[str, Calibration] | None:
    """Measure every op of `ops` the table lacks (cold and hot, see ``measure.time_rounds``) and,
    given `calibration` networks (named ``family:name``), fit each family's cache blend on its own
    (``calibrate``).

    Rounds are round-major over *all* items (every op, then every calibration network, per round),
    so each estimate spans the whole build and a slow phase of the machine cannot bias one group
    of ops or the fit. After every round the raw timings go to a sidecar file next to the table,
    so a killed build resumes at the round it stopped in."""
    todo = {k: ops[k] for k in ops if k not in table}
    cal_ops = ops_for(calibration.values()) if calibration else {}
    measure_ops = {**todo, **cal_ops}   # calibration ops are re-timed: the fit needs them in its rounds
    if not measure_ops:
        return None
    order = list(measure_ops)
    # Shuffled (fixed seed) so that within a round a slow spell hits ops of every stage, which
    # averages out in a network's sum, instead of every op of one stage.
    random.Random(0).shuffle(order)
    backend = table_backend(table)
    items = backends.runners(_op_items({k: measure_ops[k] for k in order}), backend, threads)
    with _networks(calibration or {}, backend, threads) as models:
        sidecar = table.path.with_name(table.path.name + ".partial") if save and table.path else None
        record = _load_partial(sidecar, [k for k, _, _ in items] + [n for n, _, _ in models], rounds)
        bar = tqdm(total=(len(items) + len(models)) * rounds, desc=desc, unit="op", disable=not progress, leave=False)
        try:
            timed = measure.time_rounds(items, models, num_threads=threads, rounds=rounds, calls=calls, record=record,
                                        on_round=(lambda rec: _save_partial(sidecar, rec, rounds)) if sidecar else None,
                                        progress=bar.update)
        finally:
            bar.close()
    params = {k: count_params(module) for k, module, _ in items}
    # A calibration network's ops already in the table (another family's, an earlier build's) were
    # timed again in these rounds: their entries take the new timings, so the blend fitted on these
    # rounds prices the entries it was fitted on (it was fitted on fresh timings of ops whose stale
    # entries then priced the networks: iFormer's XNNPACK table predicted its own calibration
    # networks 13 % fast). Entries imported from a device are not host timings and stay.
    _store(table, timed, [k for k in measure_ops if "cold_ms" in table.entries.get(k, {"cold_ms": None})], params)
    result = _calibrate(table, calibration, timed) if calibration else None
    if save and table.path is not None:
        table.save()
    if sidecar:
        sidecar.unlink(missing_ok=True)
    return result


def _load_partial(path: Path | None, names: list[str], rounds: int) -> dict | None:
    """The record of an interrupted build of the same items, else None."""
    if path is None or not path.is_file():
        return None
    try:
        raw = io.read_yaml(path)
        if sorted(raw["names"]) == sorted(names) and raw["rounds"] == rounds:
            return raw["record"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        pass
    return None   # a different build or a damaged file: start over


def _save_partial(path: Path, record: dict, rounds: int) -> None:
    names = [*record["cold"], *record["models"]]
    io.write_yaml(path, {"names": names, "rounds": rounds, "record": record})


@contextlib.contextmanager
def _networks(configs: dict[str, ArchConfig], backend: str, threads: int) -> Iterator[list[measure.Item]]:
    """Runners of whole networks for ``time_rounds``. On the CPU with torch they run in a process
    of their own (``measure.NetworksApart``): the process timing the ops runs networks slower
    than the process a user runs them in, and the blend is fitted on these timings. The other
    backends' runtimes plan their own memory and run here."""
    if backend != "torch-eager" or not configs:
        yield backends.runners(_model_items(configs), backend, threads)
        return
    with measure.NetworksApart(functools.partial(_model_items, configs), threads) as apart:
        yield apart.runners()


def _op_items(ops: dict[str, OpNode]) -> list[measure.Item]:
    return measure.prepare((k, graph.deploy_module(op), op.in_shape) for k, op in ops.items())


def _model_items(configs: dict[str, ArchConfig]) -> list[measure.Item]:
    return measure.prepare((name, reparameterize(get_family(cfg.family).build(cfg)), (1, 3, cfg.resolution, cfg.resolution))
                           for name, cfg in configs.items())


def _store(table: LatencyTable, timed: measure.RoundTimings, keys: Iterable[str], params: dict[str, int]) -> None:
    for k in keys:
        cold, hot = timed.cold[k], timed.hot[k]
        table.add(k, cold_ms=cold.ms, hot_ms=hot.ms, params=params[k], source="measured", cold_std_ms=cold.std_ms,
                  hot_std_ms=hot.std_ms, count=cold.count + hot.count, rounds=cold.rounds)


def new_table(device: str, resolution: int, threads: int, backend: str = "torch-eager",
              on_device: bool = False) -> LatencyTable:
    return LatencyTable(device, resolution, backends.environment(backend, threads, on_device), {})


def table_backend(table: LatencyTable) -> str:
    """How the table's entries are measured (tables from before backends existed: torch eager)."""
    return table.environment.get("backend", "torch-eager")


def measure_models(configs: dict[str, ArchConfig], *, threads: int = 1, rounds: int = 5,
                   min_run_time: float = 0.2, progress: Callable[[int], None] | None = None,
                   backend: str = "torch-eager", on_round: Callable[[dict], None] | None = None
                   ) -> dict[str, measure.Timing]:
    """End-to-end latency of whole deploy-form models, same harness as the table's ops, timed in
    the order of `configs` in every round (`on_round` sees the per-round record), on the CPU in a
    process that runs only them (``_networks``), as a table's calibration networks are timed."""
    with _networks(configs, backend, threads) as models:
        return measure.time_rounds([], models, num_threads=threads, rounds=rounds, model_min_run_time=min_run_time,
                                   progress=progress, on_round=on_round).models


# How calibration networks are drawn (recorded with a calibration, so that `nas lut validate`
# re-times the same networks): "uniform", `samples` uniform draws round-robin over the spaces (a
# table built before 2026-12-05); "spread", per space its share of networks at evenly spaced size
# ranks among SPREAD_POOL x as many uniform draws, the smallest and the largest included, so that
# they span the sizes a space's configs take (six uniform draws of EfficientFormer's small space
# missed its smallest tenth, where the fitted blend was then clamped).
CALIBRATION_DRAWS = ("uniform", "spread")
SPREAD_POOL = 8


def calibration_configs(spaces: list[SearchSpace], num_classes: int | None, samples: int,
                        seed: int, draw: str = "spread") -> dict[str, ArchConfig]:
    """`samples` random configs of `spaces`, drawn as `draw` says (`CALIBRATION_DRAWS`)."""
    rng = random.Random(seed)
    if draw == "uniform":
        return {f"cal{i:02d}": random_choice(spaces[i % len(spaces)], rng).to_config(spaces[i % len(spaces)],
                                                                                    num_classes)
                for i in range(samples)}
    picked: list[ArchConfig] = []
    for j, space in enumerate(spaces):
        share = samples // len(spaces) + (j < samples % len(spaces))
        pool = sorted((random_choice(space, rng).to_config(space, num_classes) for _ in range(SPREAD_POOL * share)),
                      key=_weight_proxy)
        ranks = [round(i * (len(pool) - 1) / max(share - 1, 1)) for i in range(share)]
        picked += [pool[r] for r in ranks]
    return {f"cal{i:02d}": cfg for i, cfg in enumerate(picked)}


def _weight_proxy(config: ArchConfig) -> float:
    """A network's weight count up to a factor, without building it: width² per kept block."""
    return sum(stage.width ** 2 * len(stage.blocks) for stage in config.stages)


def fit_cache_model(hot: list[float], gap: list[float], measured: list[float],
                    weight_bytes: list[float], boundary: list[float] | None = None) -> CacheModel:
    """Least squares on relative error: minimise sum(((hot + blend(W) * gap - k * B) / measured - 1) ** 2)
    over base and slope of blend(W) = base + slope * ln(W / 1 MiB) and, given each network's
    `boundary` MB B (``lut.table.boundary_mb`` summed), the cost k >= 0 per MB its ops pay alone
    and not in the network. With fewer than 4 networks or a weight range under 1.5x the slope
    is not identifiable and only the base is fitted."""
    y, h, g = (np.asarray(v, dtype=float) for v in (measured, hot, gap))
    x = np.log(np.asarray(weight_bytes, dtype=float) / 2**20)
    span = (float(x.min()), float(x.max()))
    design = [g / y] + ([g * x / y] if len(y) >= 4 and span[1] - span[0] > math.log(1.5) else [])
    if boundary is not None:
        b = np.asarray(boundary, dtype=float)
        coef, *_ = np.linalg.lstsq(np.stack(design + [-b / y], axis=1), 1 - h / y, rcond=None)
        if coef[-1] > 0:
            return CacheModel(float(coef[0]), float(coef[1]) if len(coef) > 2 else 0.0, span, float(coef[-1]))
    coef, *_ = np.linalg.lstsq(np.stack(design, axis=1), 1 - h / y, rcond=None)
    return CacheModel(float(coef[0]), float(coef[1]) if len(coef) > 1 else 0.0, span)


# Ridge strengths tried for the kind factors; leave-one-out over the calibration networks picks one.
KIND_RIDGES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def fit_kind_factors(hot_by_kind: list[dict[str, float]], measured: list[float]) -> tuple[dict[str, float], float]:
    """Per op kind (``graph.key_kind``), the factor its hot time is multiplied by in a network, for
    a launch-bound backend: minimise sum((sum_k f_k * hot_k / measured - 1) ** 2) + λ sum((f_k - 1) ** 2).
    The ridge pulls a kind the calibration networks say little about to its own timing (f = 1);
    λ is the one of KIND_RIDGES with the smallest median leave-one-out |error| on the networks.
    Returns (factors, λ)."""
    kinds = sorted({k for row in hot_by_kind for k in row})
    y = np.asarray(measured, dtype=float)
    X = np.array([[row.get(k, 0.0) for k in kinds] for row in hot_by_kind]) / y[:, None]

    def solve(rows, lam):
        A, b = X[rows], np.ones(len(rows))
        return np.linalg.solve(A.T @ A + lam * np.eye(len(kinds)), A.T @ b + lam * np.ones(len(kinds)))

    def loo(lam):
        everyone = np.arange(len(y))
        return float(np.median([abs(X[i] @ solve(np.delete(everyone, i), lam) - 1) for i in everyone]))

    lam = min(KIND_RIDGES, key=loo) if len(y) >= 3 else KIND_RIDGES[-1]
    return {k: round(float(f), 4) for k, f in zip(kinds, solve(np.arange(len(y)), lam))}, lam


@dataclass
class Calibration:
    cache_model: CacheModel
    predicted_ms: dict[str, float]   # with the fitted blend, from the calibration rounds' op timings
    measured_ms: dict[str, float]

    @property
    def errors_pct(self) -> list[float]:
        return [100 * (self.predicted_ms[n] / self.measured_ms[n] - 1) for n in self.measured_ms]


def calibrate(table: LatencyTable, spaces: list[SearchSpace], num_classes: int | None = None, *, samples: int = 12,
              seed: int = 0, threads: int = 1, rounds: int = 5, progress: bool = True, save: bool = True,
              ops: dict[str, OpNode] | None = None) -> dict[str, Calibration]:
    """Fit the table's cache blend of each family of `spaces` on `samples` random networks of that
    family's spaces, measuring `ops` (and the networks' own ops) that the table lacks in the same
    rounds. Families the table holds calibrations of and `spaces` lacks keep theirs.

    The networks are timed end to end in the same rounds as their ops (cold and hot), and the
    blend b minimises the squared relative error of sum(hot + b * (cold - hot)) against them.
    Returns each family's calibration."""
    spaces = [s.replace(resolution=table.resolution) for s in spaces]
    by_family: dict[str, list[SearchSpace]] = {}
    for s in spaces:
        by_family.setdefault(s.family, []).append(s)
    configs = {f"{family}:{name}": cfg for family, fam_spaces in by_family.items()
               for name, cfg in calibration_configs(fam_spaces, num_classes, samples, seed).items()}
    result = fill(table, ops or {}, calibration=configs, threads=threads, rounds=rounds, save=save,
                  desc=f"{table.device}@{table.resolution}", progress=progress)
    for family, fam_spaces in by_family.items():
        table.environment["calibrations"][family].update({"spaces": [s.to_dict() for s in fam_spaces],
                                                          "num_classes": num_classes, "samples": samples,
                                                          "seed": seed, "draw": "spread"})
    if save and table.path is not None:
        table.save()
    return result


def _calibrate(table: LatencyTable, configs: dict[str, ArchConfig], timed: measure.RoundTimings) -> dict[str, Calibration]:
    """Each family's cache model (or kind factors) fitted on its calibration networks, `configs`
    named ``family:name`` (their ops in the table, timed in the same rounds), and stored in the table."""
    out = {}
    for family in dict.fromkeys(c.family for c in configs.values()):
        mine = {n.partition(":")[2]: c for n, c in configs.items() if c.family == family}
        out[family] = _fit_family(table, family, mine, {n: timed.models[f"{family}:{n}"].ms for n in mine},
                                  min(timed.models[f"{family}:{n}"].rounds for n in mine))
    return out


def _fit_family(table: LatencyTable, family: str, configs: dict[str, ArchConfig],
                measured: dict[str, float], rounds: int) -> Calibration:
    """Fit on the table's own entries, so that the calibration's error is the table's."""
    entry = table.entries
    hot = {n: sum(float(entry[k]["hot_ms"]) for k in graph.keys(c)) for n, c in configs.items()}
    gap = {n: sum(float(entry[k]["cold_ms"]) - float(entry[k]["hot_ms"]) for k in graph.keys(c))
           for n, c in configs.items()}
    weights = {n: table.weight_bytes(c) for n, c in configs.items()}
    record: dict = {}
    if backends.get_backend(table_backend(table)).launch_bound:
        # A GPU at batch 1: a network runs its ops with weights warm (cold timings, after the L2 is
        # evicted, overprice them ~1.7x and the blend's fit turns negative), but not every kind of
        # op at its standalone speed (experiments/cuda_tables): hot times, a factor per kind.
        model = CacheModel(base=0.0)
        by_kind = {n: _hot_by_kind(table, c) for n, c in configs.items()}
        factors, ridge = fit_kind_factors(list(by_kind.values()), [measured[n] for n in configs])
        record.update(kind_factors=factors, kind_ridge=ridge)
        predicted = {n: sum(factors.get(k, 1.0) * ms for k, ms in by_kind[n].items()) for n in configs}
    else:
        boundary = ({n: sum(boundary_mb(graph.ops(c))) for n, c in configs.items()}
                    if backends.get_backend(table_backend(table)).layout_boundaries else None)
        fitted = fit_cache_model(*([d[n] for n in configs] for d in (hot, gap, measured, weights)),
                                 [boundary[n] for n in configs] if boundary else None)
        model = CacheModel.from_dict(fitted.to_dict())   # as stored (rounded), so predictions match the table's
        predicted = {n: hot[n] + model.blend(weights[n]) * gap[n] - model.boundary_ms_per_mb * (boundary or {}).get(n, 0)
                     for n in configs}
    result = Calibration(model, predicted, measured)
    table.set_calibration(family, {
        "cache_model": model.to_dict(), **record,
        "rounds": rounds, "date": _dt.date.today().isoformat(),
        "median_abs_error_pct": round(statistics.median(abs(e) for e in result.errors_pct), 3),
        "measured_ms": {n: round(v, 4) for n, v in measured.items()},
    })
    return result


def _hot_by_kind(table: LatencyTable, config: ArchConfig) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in graph.keys(config):
        out[graph.key_kind(k)] = out.get(graph.key_kind(k), 0.0) + float(table.entries[k]["hot_ms"])
    return out


# A quiet build calibrates at 1-4 % median error; a build under host load has shown 30 %.
NOISY_CALIBRATION_PCT = 10.0


def noisy_calibration_warning(table: LatencyTable) -> str | None:
    """A one-line warning when a family's calibration networks missed the table's predictions by
    more than NOISY_CALIBRATION_PCT (median): the machine was busy while it was timed."""
    medians = {family: cal.get("median_abs_error_pct")
               for family, cal in (table.environment.get("calibrations") or {}).items()}
    noisy = {f: m for f, m in medians.items() if m is not None and m > NOISY_CALIBRATION_PCT}
    if not noisy:
        return None
    family, median = max(noisy.items(), key=lambda kv: kv[1])
    which = "its calibration networks" if family == ANY_FAMILY else f"{family}'s calibration networks"
    return (f"warning: {table.path}: {which} missed the table's predictions by {median:.1f}% "
            f"(median; a quiet machine gives 1-4%): the host was busy while it was timed; rebuild it on a quiet "
            f"machine (`nas lut build --device {table.device} --recalibrate`, after deleting the file to re-time ops)")


def space_ops(space: SearchSpace, num_classes: int) -> dict[str, OpNode]:
    """Every op key any config of `space` can produce (a fresh dict; the listing is computed once
    per process and space: building every covering config's op list takes seconds per space, and
    `nas lut import/devices/export` and the table store ask for the same spaces again)."""
    key = (repr(space.to_dict()), num_classes)
    if key not in _SPACE_OPS:
        _SPACE_OPS[key] = ops_for(covering_configs(space, num_classes))
    return dict(_SPACE_OPS[key])


_SPACE_OPS: dict[tuple[str, int], dict[str, OpNode]] = {}



class Predictor:
    """``predict(config)`` against a table. Keys it lacks are measured on demand when the device
    is measurable here, or estimated by `estimate` (``table, ops -> None``: an Apple device's cost
    model), and the table saved; otherwise a ``MissingKeysError`` names them."""

    def __init__(self, table: LatencyTable, measurable: bool, *, threads: int = 1, rounds: int = 5,
                 progress: bool = True, estimate: Callable[[LatencyTable, dict[str, OpNode]], None] | None = None):
        self.table, self.measurable, self.estimate = table, measurable, estimate
        self.threads, self.rounds, self.progress = threads, rounds, progress
        self._cache: dict[str, float] = {}

    def __call__(self, config: ArchConfig) -> float:
        key = repr(config.to_dict())
        if key not in self._cache:
            missing = self.table.missing(config) if self.measurable or self.estimate else []
            if missing:
                ops = {k: op for k, op in ops_for([config]).items() if k in missing}
                if self.measurable:
                    fill(self.table, ops, threads=self.threads, rounds=self.rounds, progress=self.progress,
                         desc="measuring new ops")
                else:
                    self.estimate(self.table, ops)
                    self.table.save()
            self._cache[key] = self.table.predict(config)
        return self._cache[key]
