"""Filling latency tables: which ops a space can need, measuring them, timing whole models."""
from __future__ import annotations

import itertools
from typing import Callable, Iterable

from tqdm.auto import tqdm

from lut import graph, measure
from lut.table import LatencyTable
from supernets.config import IDENTITY, ArchConfig, Choice, SearchSpace
from supernets.layers import reparameterize
from supernets.registry import get_family


def covering_configs(space: SearchSpace, num_classes: int | None = None) -> Iterable[ArchConfig]:
    """Configs whose op keys together cover every key any config of the space can produce.

    A key depends only on local facts (kind, width, grid, neighbour widths), so it suffices to
    vary one stage's (width, kind) at a time and every pair of adjacent stage widths.
    """
    kinds = [[k for k in s.choices if k != IDENTITY] for s in space.stages]
    base_widths = tuple(s.max_width for s in space.stages)
    base_kinds = tuple((ks[0],) * s.slots for ks, s in zip(kinds, space.stages))
    for j, s in enumerate(space.stages):
        for w, kind in itertools.product(space.widths(j), kinds[j]):
            choice = Choice(base_widths, base_kinds).replace_width(j, w)
            row = list(choice.kinds)
            row[j] = (kind,) * s.slots
            yield Choice(choice.widths, tuple(row)).to_config(space, num_classes)
    for j in range(1, len(space.stages)):
        for a, b in itertools.product(space.widths(j - 1), space.widths(j)):
            yield Choice(base_widths, base_kinds).replace_width(j - 1, a).replace_width(j, b).to_config(space, num_classes)


def ops_for(configs: Iterable[ArchConfig]) -> dict[str, dict]:
    """key -> op (first occurrence) over the configs."""
    out: dict[str, dict] = {}
    for cfg in configs:
        for op in graph.ops(cfg):
            out.setdefault(op["key"], op)
    return out


def fill(table: LatencyTable, ops: dict[str, dict], *, threads: int = 1, rounds: int = 5,
         calls: int = 15, chunk: int = 24, save: bool = True, desc: str = "measuring",
         progress: bool = True) -> list[str]:
    """Measure every op of `ops` the table lacks and store it. The table is saved after each
    chunk, so a killed build resumes where it stopped. Returns the keys measured."""
    todo = [k for k in ops if k not in table]
    if not todo:
        return []
    bar = tqdm(total=len(todo) * rounds, desc=desc, unit="timing", disable=not progress, leave=False)
    try:
        for start in range(0, len(todo), chunk):
            keys = todo[start:start + chunk]
            items = measure.prepare((k, graph.deploy_module(ops[k]), ops[k]["in_shape"]) for k in keys)
            timings = measure.time_ops(items, num_threads=threads, rounds=rounds, calls=calls,
                                       progress=bar.update)
            for k, t in timings.items():
                table.add(k, t.ms, source="measured", mean_ms=t.mean_ms, std_ms=t.std_ms, count=t.count, rounds=t.rounds)
            if save and table.path is not None:
                table.save()
    finally:
        bar.close()
    return todo


def new_table(device: str, resolution: int, threads: int) -> LatencyTable:
    env = measure.environment(threads)
    return LatencyTable(device, resolution, env, {})


def measure_models(configs: dict[str, ArchConfig], *, threads: int = 1, rounds: int = 5,
                   min_run_time: float = 0.2, progress: Callable[[int], None] | None = None) -> dict[str, measure.Timing]:
    """End-to-end latency of whole deploy-form models, same harness as the table's ops."""
    items = []
    for name, cfg in configs.items():
        model = reparameterize(get_family(cfg.family).build(cfg))
        items.append((name, model, (1, 3, cfg.resolution, cfg.resolution)))
    return measure.time_models(measure.prepare(items), num_threads=threads, rounds=rounds,
                               min_run_time=min_run_time, progress=progress)


def space_ops(space: SearchSpace, num_classes: int) -> dict[str, dict]:
    return ops_for(covering_configs(space, num_classes))



class Predictor:
    """``predict(config)`` against a table; keys it lacks are measured on demand (and the table
    saved) when the device is measurable here, else a ``MissingKeysError`` names them."""

    def __init__(self, table: LatencyTable, measurable: bool, *, threads: int = 1, rounds: int = 5,
                 progress: bool = True):
        self.table, self.measurable = table, measurable
        self.threads, self.rounds, self.progress = threads, rounds, progress
        self._cache: dict[str, float] = {}

    def __call__(self, config: ArchConfig) -> float:
        key = repr(config.to_dict())
        if key not in self._cache:
            if self.measurable:
                missing = self.table.missing(config)
                if missing:
                    ops = {k: op for k, op in ops_for([config]).items() if k in missing}
                    fill(self.table, ops, threads=self.threads, rounds=self.rounds, progress=self.progress,
                         desc="measuring new ops")
            self._cache[key] = self.table.predict(config)
        return self._cache[key]
