"""Latency measurement with ``torch.utils.benchmark`` (runners from ``lut.backends``).

Protocol (a shared machine runs whole phases 20-30% slow): fixed thread count (1 by default; 2
threads are about 1.6x faster but noisier), deploy-form modules in eval/inference mode, batch 1;
candidates are timed in *interleaved rounds* (every item once per round, ``blocked_autorange``
each time) so a slow phase of the shared machine hits all items alike. Within a round an item's
value is the median of its calls (robust to single spikes); across rounds the estimate is the
*fastest* round, because contention on a shared machine only ever slows a round down: the
fastest round is the most reproducible figure for the unloaded device (median and spread are
kept alongside).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.utils.benchmark as benchmark


@dataclass
class Timing:
    ms: float         # fastest round's median: the value a table predicts with
    median_ms: float  # median of round medians
    mean_ms: float    # mean of round medians
    std_ms: float     # std of round medians
    count: int        # timed calls over all rounds (ops) or rounds (models, each a blocked_autorange)
    rounds: int


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def cpu_model() -> str:
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


Item = tuple[str, torch.nn.Module, torch.Tensor]

# glibc's mallopt parameters and the values timing runs with
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES, _TRIM_THRESHOLD_BYTES = 32 << 20, 128 << 20


def steady_allocator() -> bool:
    """Serve activations up to 32 MB from the heap and keep freed memory, for the rest of the
    process (glibc; elsewhere a no-op, False).

    glibc's defaults map a large tensor fresh (page faults on first touch) and return the heap's
    top to the system when it is freed, until its dynamic threshold has seen tensors that large:
    a process that has just built a table (thousands of modules) runs networks 1.2x slower or
    faster than a fresh one, and by how much depends on the config's activation sizes. A FastViT
    table built and validated in one process fitted its networks to 1.6 %; the same table, the
    networks timed in a fresh process, 11.8 % (Spearman 0.87); in a fresh process with these two
    settings, 3.0 % (0.96). Timing here, in every process, in the steady state of a process that
    runs networks over and over (experiments/lut_all_families)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                    _TRIM_THRESHOLD_BYTES))


@dataclass
class RoundTimings:
    """What ``time_rounds`` measured: per op its cache-cold and cache-hot time, per model its time."""
    cold: dict[str, Timing]
    hot: dict[str, Timing]
    models: dict[str, Timing]


def time_rounds(ops: list[Item], models: list[Item] = (), *, num_threads: int = 1, rounds: int = 5,
                calls: int = 7, model_min_run_time: float = 0.2, record: dict | None = None,
                on_round: Callable[[dict], None] | None = None,
                progress: Callable[[int], None] | None = None) -> RoundTimings:
    """Time ops (cold and hot) and whole models in interleaved rounds.

    An op inside a network runs neither fully cache-cold nor fully hot: its weights were last
    touched one forward pass ago and its input was just written by its producer. So each op is
    timed in both bounding states and the table blends them (``LatencyTable.cache_blend``,
    calibrated against whole networks timed in the same rounds):

    * cold: one call at a time, after evicting L2 by *reading* a scratch buffer twice its size
      (writing would leave dirty lines draining during the timed call) and re-writing the op's
      input (its producer just wrote it);
    * hot: `calls` calls back to back after one untimed call, weights resident in L2.

    Models are timed back to back with ``torch.utils.benchmark``'s ``blocked_autorange`` (how a
    deployed network runs). Every item is timed once per round, so a slow phase of the shared
    machine hits all items alike (see the module docstring for the estimator). Measured on
    EfficientFormer configs (experiments/lut_fidelity): the cold sum overpredicts networks by
    ~10%, the hot sum underpredicts by ~15%.

    `record` holds the per-round values ({"cold"|"hot"|"models": {name: [ms per round]}}); pass
    the record of an interrupted run to continue it, and `on_round(record)` to persist it after
    every round.
    """
    steady_allocator()
    record = record or {"cold": {}, "hot": {}, "models": {}}
    cold = {name: list(record["cold"].get(name, ())) for name, _, _ in ops}
    hot = {name: list(record["hot"].get(name, ())) for name, _, _ in ops}
    whole = {name: list(record["models"].get(name, ())) for name, _, _ in models}
    record = {"cold": cold, "hot": hot, "models": whole}
    done = min((len(v) for v in (*cold.values(), *whole.values())), default=rounds)
    if progress and done:
        progress(done * (len(ops) + len(models)))
    scratch = torch.ones(2 * _l2_bytes() // 4)
    with threads(num_threads), torch.inference_mode():
        if done < rounds:
            for _, module, x in [*ops, *models]:  # warm-up: allocator, lazy init, one-time dispatch costs
                for _ in range(3):
                    module(x)
        for r in range(done, rounds):
            samples: dict[str, list[float]] = {name: [] for name in cold}
            for _ in range(calls):
                for name, module, x in ops:
                    (getattr(module, "evict_cache", None) or scratch.sum)()   # a GPU runner evicts its own L2
                    x.mul_(1.0)
                    samples[name] += _call_times(module, x, 1)
            for name, values in samples.items():
                cold[name][r:] = [statistics.median(values)]
            for name, module, x in ops:
                module(x)  # brings its weights into cache
                hot[name][r:] = [statistics.median(_call_times(module, x, calls))]
                if progress:
                    progress(1)
            for name, module, x in models:
                whole[name][r:] = [_autorange(module, x, num_threads, model_min_run_time)]
                if progress:
                    progress(1)
            if on_round:
                on_round(record)
    return RoundTimings(_summarise(cold, calls), _summarise(hot, calls), _summarise(whole, None))


def _call_times(module, x, calls: int) -> list[float]:
    """Milliseconds of `calls` back-to-back calls, each timed alone (by the runner itself when it
    has its own clock: CUDA events, see ``lut.backends``)."""
    if hasattr(module, "time_calls"):
        return module.time_calls(x, calls)
    out = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        module(x)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


class NetworksApart:
    """Whole networks timed in a process that runs nothing else, as a user's process runs them.

    A process that has timed a table's thousand ops runs networks up to 14 % slower than a fresh
    one, and stays slower (a full garbage collection and
    ``malloc_trim`` do not bring it back: experiments/lut_all_families/process_state.md); a blend
    fitted on networks timed there priced networks timed in fresh processes 1-26 % high (build 9:
    MobileViTv3 at 256 px +26 %, the 224 px families +1-9 %). The worker is forked from a
    `forkserver` (started once per session, ``lut.build`` imported), so it starts fresh in milliseconds,
    and is timed in the same rounds as the ops: ``runners()`` are items for ``time_rounds``.

    `make_items` (picklable, e.g. a ``functools.partial`` of a module-level function) builds the
    (name, module, input) items in the worker."""

    def __init__(self, make_items: Callable[[], list[Item]], num_threads: int = 1):
        import multiprocessing

        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["torch", "lut.build"])   # what a worker imports
        else:   # Windows: a spawned worker imports them itself (seconds, once per build)
            ctx = multiprocessing.get_context("spawn")
        self._conn, theirs = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_networks, args=(theirs, make_items, num_threads), daemon=True)
        self._proc.start()
        theirs.close()
        self.names: list[str] = self._ask()   # the worker says which networks it built

    def _ask(self, *message):
        if message:
            self._conn.send(message)
        try:
            kind, value = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"the process timing the networks died (exit code {self._proc.exitcode})") from None
        if kind == "error":
            raise RuntimeError(f"timing the networks apart: {value}")
        return value

    def runners(self) -> list[Item]:
        return [(name, _NetworkApart(self, name), None) for name in self.names]

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("stop",))
            except OSError:
                pass
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
        self._conn.close()

    def __enter__(self) -> NetworksApart:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _NetworkApart:
    """One network of a ``NetworksApart`` worker, callable as ``time_rounds`` calls a model."""

    def __init__(self, worker: NetworksApart, name: str):
        self._worker, self._name = worker, name

    def __call__(self, x=None) -> None:          # a warm-up pass, in the worker
        self._worker._ask("call", self._name)

    def autorange(self, min_run_time: float) -> float:
        return self._worker._ask("autorange", self._name, min_run_time)


def _serve_networks(conn, make_items, num_threads: int) -> None:
    steady_allocator()
    try:
        items = {name: (module, x) for name, module, x in make_items()}
        conn.send(("ok", list(items)))
    except Exception as e:   # noqa: BLE001 (said to the parent, which raises it)
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    with threads(num_threads), torch.inference_mode():
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message[0] == "stop":
                return
            try:
                module, x = items[message[1]]
                if message[0] == "call":
                    module(x)
                    conn.send(("ok", None))
                else:
                    conn.send(("ok", _autorange(module, x, num_threads, message[2])))
            except Exception as e:   # noqa: BLE001
                conn.send(("error", f"{type(e).__name__}: {e}"))


def _autorange(module, x, num_threads: int, min_run_time: float) -> float:
    if hasattr(module, "autorange"):   # timed elsewhere (``NetworksApart``)
        return module.autorange(min_run_time)
    m = benchmark.Timer(stmt="module(x)", globals={"module": module, "x": x},
                        num_threads=num_threads).blocked_autorange(min_run_time=min_run_time)
    return m.median * 1e3


def _summarise(per_round: dict[str, list[float]], calls_per_round: int | None) -> dict[str, Timing]:
    return {
        name: Timing(ms=min(v), median_ms=statistics.median(v), mean_ms=statistics.fmean(v),
                     std_ms=statistics.pstdev(v) if len(v) > 1 else 0.0,
                     count=len(v) * calls_per_round if calls_per_round else len(v), rounds=len(v))
        for name, v in per_round.items()
    }


def prepare(modules: Iterable[tuple[str, torch.nn.Module, tuple[int, ...]]]) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    """Deploy modules in eval mode with a fixed random input of the given shape."""
    gen = torch.Generator().manual_seed(0)
    return [(name, m.eval(), torch.randn(shape, generator=gen)) for name, m, shape in modules]
