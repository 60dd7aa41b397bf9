"""Supernet runs as users start them: a checked recipe from the flags given (`supernet_recipe`),
trained here or with Ray Train DDP (`train_supernet_run`), continued after a crash
(`resume_supernet_run`, `train_or_resume`), every family in turn (`train_every_family`).

What one process does in a run (the recipe, one epoch, the checkpoint) is `nas.supernet_training`;
each Ray Train worker runs that too (`nas.ray_train`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from nas import checkpoint, data as data_mod, runs
from nas.errors import ParameterError
from nas.supernet_training import Recipe, load_space, train_supernet
from supernets.config import SearchSpace


def train_supernet_run(recipe: Recipe, run_dir: str | Path, *, resume: bool = False, workers: int = 1,
                       ray_address: str | None = None, gpus_per_worker: float | None = None,
                       storage_path: str | None = None, progress: bool = True,
                       log: Callable[[str], None] = print) -> Path:
    """Train the supernet into `run_dir` (or continue it, `resume`), here or with Ray Train DDP:
    several `workers` on one machine go through the same Ray path as a cluster, a local one.
    A fresh run that fails leaves no run directory behind."""
    import contextlib

    run_dir = Path(run_dir)
    if workers < 1:
        raise ParameterError("workers", workers, "need at least one worker")
    runtime = recipe.runtime()   # a CUDA device without CUDA, fp16 on the CPU: one line, before anything is written
    address = ray_address or ("local" if workers > 1 else None)
    log(f"training {recipe.family} supernet on {recipe.data} ({recipe.epochs} epochs, {recipe.mixing} mixing, "
        f"{runtime.device.type}{', ' + recipe.amp if recipe.amp != 'off' else ''}) -> {run_dir}")
    with contextlib.nullcontext() if resume else runs.removed_if_stillborn(run_dir):
        if not address:
            return train_supernet(recipe, run_dir, resume=resume, progress=progress, log=log)
        from nas import cluster, ray_train

        gpus = gpus_per_worker if gpus_per_worker is not None else float(runtime.device.type == "cuda")
        with cluster.connected(address):
            log(f"Ray Train: {workers} DDP workers ({'NCCL, GPU' if gpus else 'gloo, CPU'}); "
                "a lost worker restarts the group from the last epoch's checkpoint")
            return ray_train.train_on_ray(recipe, run_dir, workers=workers, gpus_per_worker=gpus,
                                        storage_path=storage_path, threads=max(1, recipe.threads // workers))


def family_of_space(space: str) -> str:
    """The family a space names: a space file's own; the default family's for a shipped name."""
    import search_spaces

    return runs.DEFAULT_FAMILY if space in search_spaces.SPACES else SearchSpace.load(space).family


def supernet_recipe(*, family: str | None = None, space: str = "small", img_size: int | None = None,
                    **fields) -> Recipe:
    """A checked `Recipe` for a new run. `family` defaults to the space's (`family_of_space`);
    `img_size` to 64 px for the in-memory sets and to the space's deploy resolution for an image
    folder (`data.default_img_size`)."""
    recipe = Recipe(family=family or family_of_space(space), space=space, **fields)
    recipe.img_size = img_size or data_mod.default_img_size(recipe.data, lambda: load_space(recipe).resolution)
    recipe.check()
    return recipe


def resume_supernet_run(run_dir: str | Path, *, workers: int = 1, ray_address: str | None = None,
                        gpus_per_worker: float | None = None, storage_path: str | None = None,
                        progress: bool = True, log: Callable[[str], None] = print, **changes) -> Path:
    """Continue the supernet run in `run_dir` from its last epoch. `changes` may set runtime
    fields (`epochs`, `device`, `threads`, ...); any other must equal the run's."""
    run_dir = Path(run_dir)
    recipe = Recipe.resumed(checkpoint.load(run_dir / runs.SUPERNET)["recipe"], changes)
    return train_supernet_run(recipe, run_dir, resume=True, workers=workers, ray_address=ray_address,
                              gpus_per_worker=gpus_per_worker, storage_path=storage_path, progress=progress,
                              log=log)


def train_or_resume(recipe: Recipe, run_dir: str | Path, *, progress: bool = True,
                    log: Callable[[str], None] = print, **run_options) -> Path:
    """The supernet of `run_dir`: there already when the run finished, continued from its last
    epoch when it was interrupted (the recipe must match the run's but for runtime fields), else
    trained afresh. `run_options`: `train_supernet_run`'s (workers, ray_address, ...)."""
    run_dir = Path(run_dir)
    if runs.read_info(run_dir).get("complete"):
        log(f"{recipe.family}: done already ({run_dir / runs.SUPERNET})")
        return run_dir / runs.SUPERNET
    if (run_dir / runs.SUPERNET).is_file():   # refused here, before a Ray cluster is joined for it
        recipe = Recipe.resumed(checkpoint.load(run_dir / runs.SUPERNET)["recipe"], recipe.to_dict())
        return train_supernet_run(recipe, run_dir, resume=True, progress=progress, log=log, **run_options)
    return train_supernet_run(recipe, run_dir, progress=progress, log=log, **run_options)


def train_every_family(runs_dir: str | Path, name: str, *, space: str = "small", workers: int = 1,
                       ray_address: str | None = None, gpus_per_worker: float | None = None,
                       storage_path: str | None = None, progress: bool = True,
                       log: Callable[[str], None] = print, **fields) -> Path:
    """Each family's supernet in turn, as ``runs_dir/name-FAMILY``, on a shipped `space`, with the
    recipe `fields` and `train_supernet_run`'s options. The same call again skips finished
    families and resumes the one a crash interrupted (`train_or_resume`). Returns the last
    supernet."""
    import search_spaces

    if space not in search_spaces.SPACES:
        raise ParameterError("space", space, f"every family trains a shipped space (--space "
                                             f"{'|'.join(search_spaces.SPACES)}); a file is one family's: give one --family")
    path = None
    from supernets import registry

    for family in registry.searchable_families():
        recipe = supernet_recipe(family=family, space=space, **fields)
        path = train_or_resume(recipe, Path(runs_dir) / f"{name}-{family}", workers=workers, ray_address=ray_address,
                               gpus_per_worker=gpus_per_worker, storage_path=storage_path, progress=progress,
                               log=log)
    return path
