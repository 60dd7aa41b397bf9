"""Supernet training with Ray Train's TorchTrainer: DDP workers (gloo on CPU, NCCL on GPUs) on the
attached cluster, each running `nas.supernet_training`'s epoch on its shard of the data on the
resumable-run skeleton (`nas.engine.ResumableRun`); rank 0 reports the single-process checkpoint
after every epoch, and a lost worker restarts the group from the last one.
"""
from __future__ import annotations

import os

from nas.errors import UserError

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

    from nas import checkpoint, supernet_training as train
    from nas.engine import ResumableRun, Runtime

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
    saved = None
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d:
            saved = torch.load(Path(d) / "supernet.pt", map_location="cpu", weights_only=True)
    # each rank draws its own Gumbel noise, seeded per (rank, epoch it starts at), not restored
    run = ResumableRun(saved, rng=False)
    run.restore(state_dict=net, optimizer=optimizer)

    def event(text: str) -> None:
        with open(Path(config["run_dir"]) / EVENTS, "a") as f:
            f.write(f"{time.time():.3f} rank {rank} pid {os.getpid()} {text}\n")

    event(f"starts at epoch {run.start_epoch + 1}")
    torch.manual_seed(recipe.seed * 1_000 + rank * 97 + run.start_epoch)
    model = ray.train.torch.prepare_model(net, parallel_strategy_kwargs={"find_unused_parameters": True})
    runtime = Runtime(ray.train.torch.get_device(), recipe.amp, recipe.channels_last)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    def train_one(epoch: int) -> dict:
        stats = train.run_epoch(net, model, optimizer, scheduler, criterion, data, recipe, epoch, shard=(rank, world),
                                progress=False, validate=rank == 0, runtime=runtime)
        return {**stats, "workers": world}

    def report(epoch: int, history: list[dict]) -> None:
        if rank != 0:
            ray.train.report(history[-1])
            return
        with tempfile.TemporaryDirectory() as d:
            checkpoint.save(Path(d) / "supernet.pt", train.payload(net, optimizer, space, data, recipe, epoch, history))
            ray.train.report(history[-1], checkpoint=ray.train.Checkpoint.from_directory(d))
        event(f"finished epoch {epoch + 1}")

    run.epochs(recipe.epochs, train_one, report)


def _user_error_classes(root: type = UserError) -> list[type]:
    return [root, *(c for sub in root.__subclasses__() for c in _user_error_classes(sub))]


def _worker_error_line(error: BaseException) -> str:
    """A worker's own one-line error (any `UserError` raised inside the training loop: a bad
    config, a missing file, a diverged run) if there is one in Ray's report, else Ray's first
    line: never the group's multi-page traceback. Ray's report names the class by its module."""
    text = str(error)
    for cls in _user_error_classes():
        marker = f"{cls.__module__}.{cls.__qualname__}: "
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
