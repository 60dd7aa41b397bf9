"""CPU latency measurement with ``torch.utils.benchmark``.

Protocol (shared/ENVIRONMENT.md, "Timing on this CPU"): fixed thread count (1 by default),
deploy-form modules in eval/inference mode, batch 1; candidates are timed in *interleaved
rounds* (every item once per round, ``blocked_autorange`` each time) so a slow phase of the
shared machine hits all items alike; the estimate is the median of the round medians.
"""
from __future__ import annotations

import contextlib
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.utils.benchmark as benchmark


@dataclass
class Timing:
    ms: float         # median of round medians: the value a table predicts with
    mean_ms: float    # mean of round medians
    std_ms: float     # std of round medians
    count: int        # total timed calls over all rounds
    rounds: int


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def environment(num_threads: int) -> dict:
    return {
        "backend": "torch-eager",
        "torch": str(torch.__version__),
        "threads": num_threads,
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model(),
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _l2_bytes() -> int:
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
            text = f.read().strip()
        return int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20}[text[-1]]
    except (OSError, ValueError, KeyError):
        return 2 << 20


def time_ops(items: list[tuple[str, torch.nn.Module, torch.Tensor]], *, num_threads: int = 1,
             rounds: int = 5, calls: int = 15, progress: Callable[[int], None] | None = None) -> dict[str, Timing]:
    """Time ops as they run inside a network: one call at a time, cache-cold.

    ``benchmark.Timer`` repeats a statement back to back, which keeps an op's weights in L2;
    inside a network every op follows others that evicted them. Measured on EfficientFormer-L1
    (experiments/lut_fidelity): back-to-back op timings summed to 40.5 ms against 50.0 ms for
    the chained model, while cache-cold single calls summed to 49.7 ms. So before each timed
    call the L2 is evicted (by reading, so no dirty lines drain during the timed call) and the
    op's input re-written (its producer just wrote it). Known limit: a small network whose whole
    working set fits in L2 runs warmer than this (median +19% over random configs, see
    experiments/lut_fidelity). Rounds are interleaved; the estimate is the median of round medians.
    """
    scratch = torch.ones(2 * _l2_bytes() // 4)
    per_round: dict[str, list[float]] = {name: [] for name, _, _ in items}
    with threads(num_threads), torch.inference_mode():
        for _, module, x in items:  # warm-up: allocator, lazy init, one-time dispatch costs
            for _ in range(3):
                module(x)
        for _ in range(rounds):
            samples: dict[str, list[float]] = {name: [] for name, _, _ in items}
            for _ in range(calls):
                for name, module, x in items:
                    scratch.sum()  # read, not write: dirty lines would drain during the timed call
                    x.mul_(1.0)
                    t0 = time.perf_counter_ns()
                    module(x)
                    samples[name].append((time.perf_counter_ns() - t0) / 1e6)
            for name, values in samples.items():
                per_round[name].append(statistics.median(values))
                if progress:
                    progress(1)
    return _summarise(per_round, {name: rounds * calls for name in per_round}, rounds)


def time_models(items: list[tuple[str, torch.nn.Module, torch.Tensor]], *, num_threads: int = 1,
                rounds: int = 5, min_run_time: float = 0.2,
                progress: Callable[[int], None] | None = None) -> dict[str, Timing]:
    """Time whole networks with ``torch.utils.benchmark`` in interleaved rounds."""
    per_round: dict[str, list[float]] = {name: [] for name, _, _ in items}
    counts = {name: 0 for name, _, _ in items}
    with threads(num_threads), torch.inference_mode():
        for _, module, x in items:
            for _ in range(2):
                module(x)
        for _ in range(rounds):
            for name, module, x in items:
                m = benchmark.Timer(stmt="module(x)", globals={"module": module, "x": x},
                                    num_threads=num_threads).blocked_autorange(min_run_time=min_run_time)
                per_round[name].append(m.median * 1e3)
                counts[name] += len(m.times) * m.number_per_run
                if progress:
                    progress(1)
    return _summarise(per_round, counts, rounds)


def _summarise(per_round: dict[str, list[float]], counts: dict[str, int], rounds: int) -> dict[str, Timing]:
    return {
        name: Timing(ms=statistics.median(v), mean_ms=statistics.fmean(v),
                     std_ms=statistics.pstdev(v) if len(v) > 1 else 0.0, count=counts[name], rounds=rounds)
        for name, v in per_round.items()
    }


def prepare(modules: Iterable[tuple[str, torch.nn.Module, tuple[int, ...]]]) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    """Deploy modules in eval mode with a fixed random input of the given shape."""
    gen = torch.Generator().manual_seed(0)
    return [(name, m.eval(), torch.randn(shape, generator=gen)) for name, m, shape in modules]
