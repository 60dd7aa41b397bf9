"""Running on an existing Ray cluster (``--ray-address``); without it nothing about Ray starts.

Ray is imported only here and only when an address is given. Its loopback-safe environment is
set before the import unless the user set it: no usage stats; no token auth (Ray 2.60 turns it
on by default, and a client of a `ray start` head then fails after a 20 s retry loop unless both
sides disable it); no binding to the machine's routable address (Ray binds there even when
given 127.0.0.1 unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``).
"""
from __future__ import annotations

import contextlib
import os
import socket
from typing import Callable, Iterable, Iterator

from nas.errors import UserError

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[bool]:
    """Attach to the cluster at `address` (``auto``: the one this machine runs) for the block;
    yields whether Ray is in use. Detaches on exit; the cluster itself keeps running."""
    if not address:
        yield False
        return
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    _probe(address)
    import ray

    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UserError(f"--ray-address {address}: cannot attach to a Ray cluster ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120]}); start one with `ray start --head` or drop the flag") from None
    try:
        yield True
    finally:
        ray.shutdown()


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as e:
        raise UserError(f"--ray-address {address}: no Ray head answers there ({type(e).__name__}); give the "
                        "address `ray start --head` printed (HOST:PORT), or 'auto' on a cluster node") from None


def _evaluate_remote(net, evaluator, choice, threads: int):
    import torch

    torch.set_num_threads(threads)   # the driver's count: the same kernels, the same scores
    return evaluator(net.subnet(choice))


def evaluate_map(net, evaluator, threads: int) -> Callable[[Callable, Iterable], list]:
    """A drop-in for ``map(evaluate, choices)`` in ``nas.slim.slim`` that scores every choice of
    a step as its own Ray task. The supernet and the evaluation tensors go to the object store
    once; each task builds its sub-network there."""
    import ray

    task = ray.remote(num_cpus=1)(_evaluate_remote)
    net_ref, evaluator_ref = ray.put(net), ray.put(evaluator)

    def run(_local_fn: Callable, choices: Iterable) -> list:
        return ray.get([task.remote(net_ref, evaluator_ref, c, threads) for c in choices])

    return run


def _search_remote(net, latency, evaluator, target_ms: float, storage: str | None, out_dir, study_name: str,
                   seed: int, population: int, trials: int, threads: int) -> int:
    import torch

    from nas import search

    torch.set_num_threads(threads)
    study = search.open_study(search.open_storage(storage, out_dir), study_name, seed=seed, population=population)
    search.run_trials(net, latency, evaluator, target_ms, study, trials=trials)
    return len(study.trials)


def search_workers(workers: int, net, latency, evaluator, target_ms: float, *, storage: str | None, out_dir,
                   study_name: str, seed: int, population: int, trials: int, threads: int) -> None:
    """`workers` Ray tasks, each running trials of the one study (seeds seed+1 .. seed+workers) until
    it holds `trials` finished ones. The study must exist already (created by the driver), and its
    storage must reach every node: the default journal file on a shared path, or a database URL."""
    import ray

    task = ray.remote(num_cpus=1)(_search_remote)
    refs = [ray.put(x) for x in (net, latency, evaluator)]
    try:
        ray.get([task.remote(*refs, target_ms, storage, out_dir, study_name, seed + 1 + i, population, trials, threads)
                 for i in range(workers)])
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if getattr(e, "cause", None) is not None else e
        raise UserError(f"a search worker failed ({type(cause).__name__}: {str(cause).splitlines()[0][:160]}); "
                        "trials finished so far stay in the study, re-run to continue") from None
