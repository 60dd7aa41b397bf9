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


# ---------------------------------------------------------------------------- Ray Train
# One line per worker start ("T rank R pid P starts at epoch J") and per checkpoint ("T rank 0 pid P
# finished epoch K"): the recovery timeline of a run.
EVENTS = "ray_events.log"
USER_ERROR = "user_error.txt"   # the file a worker's checkpoint holds its one-line error in, instead of failing


def _train_loop(config: dict) -> None:
    """One Ray Train worker: DDP (gloo on CPU, NCCL on GPUs) over its shard of the data; rank 0
    reports a checkpoint after every epoch in the single-process format."""
    import tempfile
    import time
    from pathlib import Path

    import ray.train
    import ray.train.torch
    import torch
    import torch.nn as nn

    from nas import checkpoint, train
    from nas.engine import Runtime

    recipe = train.Recipe.from_dict(config["recipe"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    try:
        space, data, net, optimizer, scheduler = train.build(recipe)
    except UserError as e:
        # The user's mistake (missing data, say), the same on every rank and before any collective:
        # reported as the run's result (a checkpoint holding the line: Ray keeps metrics only with
        # one), so Ray does not restart the group max_failures times to meet it again
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / USER_ERROR).write_text(str(e))
            ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)
        return
    start_epoch, history = 0, []
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d:
            ckpt = torch.load(Path(d) / "supernet.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, history = ckpt["epoch"], list(ckpt["history"])
    def event(text: str) -> None:
        with open(Path(config["run_dir"]) / EVENTS, "a") as f:
            f.write(f"{time.time():.3f} rank {rank} pid {os.getpid()} {text}\n")

    event(f"starts at epoch {start_epoch + 1}")
    torch.manual_seed(recipe.seed * 1_000 + rank * 97 + start_epoch)   # per-worker Gumbel noise
    model = ray.train.torch.prepare_model(net, parallel_strategy_kwargs={"find_unused_parameters": True})
    device = ray.train.torch.get_device()
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    for epoch in range(start_epoch, recipe.epochs):
        stats = train.run_epoch(net, model, optimizer, scheduler, criterion, data, recipe, epoch,
                                shard=(rank, world), progress=False, validate=rank == 0,
                                runtime=Runtime(device, recipe.amp, recipe.channels_last))
        history.append({**stats, "workers": world})
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                checkpoint.save(Path(d) / "supernet.pt", train.payload(net, optimizer, space, data, recipe, epoch, history))
                ray.train.report(stats, checkpoint=ray.train.Checkpoint.from_directory(d))
            event(f"finished epoch {epoch + 1}")
        else:
            ray.train.report(stats)


def _worker_error_line(error: BaseException) -> str:
    """A worker's own one-line error (a UserError raised inside the training loop) if there is
    one in Ray's report, else Ray's first line: never the group's multi-page traceback."""
    text = str(error)
    marker = f"{UserError.__module__}.{UserError.__name__}: "
    if marker in text:
        return text.rsplit(marker, 1)[1].strip().splitlines()[0]
    return f"Ray Train failed ({type(error).__name__}: {text.strip().splitlines()[0][:160] if text.strip() else ''})"


def train_on_ray(recipe, run_dir, *, workers: int, gpus_per_worker: float = 0.0, storage_path: str | None = None,
                 max_failures: int = 3, threads: int = 1):
    """Train the supernet with Ray Train's TorchTrainer on the attached cluster; checkpoints go
    to `storage_path` (default: RUN_DIR/ray), a lost worker restarts the group from the last
    one. Returns the path of RUN_DIR/supernet.pt (the single-process format)."""
    import shutil
    from pathlib import Path

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from nas import runs

    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = str(Path(storage_path).resolve()) if storage_path else str(run_dir / "ray")
    runs.write_info(run_dir, {"family": recipe.family, "complete": False, "recipe": recipe.to_dict()})
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"recipe": recipe.to_dict(), "run_dir": str(run_dir), "threads": threads},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker={"CPU": 1, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}),
        run_config=RunConfig(name=run_dir.name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    try:
        result = trainer.fit()
        error = result.error
    except Exception as e:   # Ray >= 2.4x raises the workers' failure from fit() instead of returning it
        error = e
    if error is not None:
        raise UserError(_worker_error_line(error)) from None
    with result.checkpoint.as_directory() as d:
        if (Path(d) / USER_ERROR).is_file():
            raise UserError((Path(d) / USER_ERROR).read_text())
        shutil.copyfile(Path(d) / "supernet.pt", run_dir / ".supernet.pt.tmp")
    os.replace(run_dir / ".supernet.pt.tmp", run_dir / runs.SUPERNET)
    runs.write_info(run_dir, {"family": recipe.family, "complete": True, "recipe": recipe.to_dict()})
    return run_dir / runs.SUPERNET
