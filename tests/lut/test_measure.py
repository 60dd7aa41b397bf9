import functools
import os
import platform

import pytest
import torch

from lut import measure


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc", reason="glibc only")
def test_timing_runs_with_the_steady_allocator(monkeypatch):
    # the settings take (and taking them twice is harmless), and every timing run applies them first
    assert measure.steady_allocator() and measure.steady_allocator()
    calls = []
    monkeypatch.setattr(measure, "steady_allocator", lambda: calls.append(1) or True)
    op = ("relu", torch.nn.ReLU(), torch.zeros(1, 8, 4, 4))
    measure.time_rounds([op], num_threads=1, rounds=1, calls=1)
    assert calls == [1]


class _RunsIn(torch.nn.Module):
    """Fails unless it runs in a process other than `parent`."""

    def __init__(self, parent: int):
        super().__init__()
        self.parent = parent

    def forward(self, x):
        assert os.getpid() != self.parent, "ran in the process that times the ops"
        return x * 2


def _networks(parent: int):
    return [("net", _RunsIn(parent), torch.zeros(1, 8, 16, 16))]


def _broken():
    raise ValueError("no such family")


def test_networks_are_timed_apart_in_the_same_rounds_as_the_ops():
    # the process timing the ops runs networks 5-15 % slower than a fresh one
    # (experiments/lut_all_families/process_state.md): networks go to a worker, op timings stay here
    op = ("relu", torch.nn.ReLU(), torch.zeros(1, 8, 4, 4))
    with measure.NetworksApart(functools.partial(_networks, os.getpid())) as apart:
        assert apart.names == ["net"]
        timed = measure.time_rounds([op], apart.runners(), num_threads=1, rounds=2, calls=1, model_min_run_time=0.01)
        worker = apart._proc
    assert timed.models["net"].rounds == 2 and timed.models["net"].ms > 0 and timed.hot["relu"].ms > 0
    assert not worker.is_alive()
    with pytest.raises(RuntimeError, match="ValueError: no such family"):
        measure.NetworksApart(_broken)


@pytest.mark.slow
def test_networks_are_timed_apart_where_there_is_no_forkserver(monkeypatch):
    # Windows has no forkserver: the worker is spawned (and imports what it needs itself)
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    with measure.NetworksApart(functools.partial(_networks, os.getpid())) as apart:
        assert type(apart._proc).__name__ == "SpawnProcess" and apart.names == ["net"]
        assert apart.runners()[0][1].autorange(0.01) > 0
