"""Supernet training (single process): joint weights + α with Gumbel-softmax MetaPaths.

Open choices of the paper, as documented defaults (each a flag of ``nas train-supernet``):
* α is trained jointly with the weights on the same batches (the paper's eq. 8 derivatives),
  in its own AdamW group (``--arch-lr``, no weight decay).
* τ decays exponentially from ``--tau-max`` 5.0 to ``--tau-min`` 0.5 over the epochs.
* ``--mixing soft`` (the paper's weighted sum), ``hard`` (straight-through, one path per step,
  drawn from α) or ``uniform`` (one path drawn uniformly, α learned straight-through).
* Widths are trained too (``--no-train-widths``: full width only): per stage an α over its width
  options samples, with the same mixing and τ, FBNetV2 channel masks over the shared weights
  (``supernets.metapath.WidthChoice``), so every width trains the prefix its sub-network inherits.
* The weight recipe follows EfficientFormer's (AdamW, wd 0.025, cosine with warm-up, label
  smoothing 0.1) with budgets scaled to the data; the embedded digits train at 64 px.

A checkpoint is written atomically at the end of every epoch with the torch RNG state, and the
data order of an epoch depends only on (seed, epoch), so ``--resume`` after a kill reproduces
the uninterrupted run exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2

from nas import checkpoint, data as data_mod, engine, runs
from nas.engine import RecipeBase, Runtime, option
from nas.errors import UserError
from supernets.config import SearchSpace
from supernets.metapath import MODES
from supernets.supernet import Supernet


@dataclass
class Recipe(RecipeBase):
    family: str = option("efficientformer", "a family or 'all' (default: a --space file's family, else {default})",
                         cli_default=None)
    # a shipped space (small, paper) or a space YAML path
    space: str | None = option("small", "small (default: about the family's smallest variant, trains in minutes on "
                               "2 cores), paper (every published variant is a point of it) or a space YAML")
    arch_lr: float = option(5e-3, "learning rate of the α logits")
    # uniform (single-path one-shot): every sub-network's weights train equally often, so the
    # supernet ranks them; soft and hard did not (Kendall τ 0.75 against 0.44 and -0.38 over 17
    # trained networks, experiments/search_quality/rerank)
    mixing: str = option("uniform", "soft: weighted sum of all paths (paper eq. 8); hard: straight-through single "
                         "path drawn from α; uniform: single path drawn uniformly, α learned straight-through",
                         choices=MODES)
    tau_max: float = option(5.0)
    tau_min: float = option(0.5)
    # α over every stage's widths, trained by channel masking (FBNetV2); False: full width only
    train_widths: bool = option(True, "train every stage's width options with α and channel masks (FBNetV2; "
                                "default); --no-train-widths trains at full width only")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]):
        # recipes written before width training trained at full width
        return super().from_dict({"train_widths": False, **raw})

    def check(self) -> None:
        super().check()
        if self.mixing not in MODES:
            raise UserError(f"--mixing {self.mixing} is not a mixing mode: give one of {', '.join(MODES)}")
        if not (math.isfinite(self.arch_lr) and self.arch_lr > 0):
            raise UserError(f"--arch-lr {self.arch_lr} must be a finite number > 0")
        for name in ("tau_max", "tau_min"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)} must be a finite number > 0")
        if self.tau_min > self.tau_max:
            raise UserError(f"--tau-min {self.tau_min} exceeds --tau-max {self.tau_max} (τ decays from max to min)")

    def tau(self, epoch: int) -> float:
        if self.epochs <= 1:
            return self.tau_min
        return self.tau_max * (self.tau_min / self.tau_max) ** (epoch / (self.epochs - 1))



def load_space(recipe: Recipe) -> SearchSpace:
    import search_spaces
    from supernets.registry import get_family

    get_family(recipe.family)  # unknown family -> ConfigError naming the known ones
    # a recipe from before the paper-scale spaces has space None: the shipped space then was `small`
    path = search_spaces.resolve(recipe.family, recipe.space or "small")
    space = SearchSpace.load(path)
    if space.family != recipe.family:
        raise UserError(f"--space {path} is a {space.family} space, not {recipe.family}")
    return space


def _param_groups(net: Supernet, recipe: Recipe) -> list[dict]:
    no_decay_names = set(getattr(net.net, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, p in net.weight_parameters():
        bare = name[len("net."):] if name.startswith("net.") else name
        (no_decay if p.ndim <= 1 or bare in no_decay_names else decay).append(p)
    return [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": list(net.arch_parameters()), "weight_decay": 0.0, "lr": recipe.arch_lr},
    ]


def train_supernet(recipe: Recipe, run_dir: Path, *, resume: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print) -> Path:
    ckpt_path = run_dir / runs.SUPERNET
    run = engine.ResumableRun.open(recipe, ckpt_path, resume=resume, formats=(checkpoint.FORMAT,), holds="a supernet",
                                   outputs=(runs.RUN_INFO,))
    runtime = recipe.runtime()
    space, data, net, optimizer, scheduler = build(recipe)
    run.restore(state_dict=net, optimizer=optimizer)
    if run.resuming:
        log(f"resuming {run_dir} at epoch {run.start_epoch + 1}/{recipe.epochs}")
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_info(run_dir, {"family": recipe.family, "complete": run.start_epoch >= recipe.epochs,
                              "recipe": recipe.to_dict()})
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    runtime.prepare(net)

    def train_one(epoch: int) -> dict:
        return run_epoch(net, net, optimizer, scheduler, criterion, data, recipe, epoch, progress=progress,
                         runtime=runtime)

    def save(epoch: int, history: list[dict]) -> None:
        checkpoint.save(ckpt_path, payload(net, optimizer, space, data, recipe, epoch, history))
        log(epoch_line(history[-1], recipe))

    run.epochs(recipe.epochs, train_one, save)
    runs.write_info(run_dir, {"family": recipe.family, "complete": True, "recipe": recipe.to_dict()})
    return ckpt_path


def run_epoch(net: Supernet, model: nn.Module, optimizer, scheduler, criterion, data: data_mod.Data, recipe: Recipe,
              epoch: int, *, shard: tuple[int, int] = (0, 1), progress: bool = True, validate: bool = True,
              runtime: Runtime | None = None) -> dict:
    """One epoch of joint weight + α training on this process's shard of the data; `model` is
    `net` itself or its DDP wrapper (which averages weight and α gradients across workers)."""
    runtime = runtime or Runtime()
    tau = recipe.tau(epoch)
    net.set_mixing(recipe.mixing, tau)
    model.train()
    rank, world = shard
    loader = data_mod.train_loader(data, recipe.batch_size // world, recipe.seed, epoch, recipe.workers, shard=shard,
                                   pin_memory=runtime.device.type == "cuda")

    def compute_loss(x, y):
        out = model(x)
        return criterion(out, y), out

    stats = engine.train_epoch(model, loader, optimizer, compute_loss, runtime, desc=f"epoch {epoch + 1}/{recipe.epochs}",
                               progress=progress, postfix={"tau": f"{tau:.2f}"}, scheduler=scheduler,
                               updates_done=epoch * len(loader))
    # Validation never touches the training RNG stream: the Gumbel noise of the next epoch must
    # not depend on whether validation ran, or a resumed run would diverge.
    val_acc = float("nan")
    if validate:
        if len(net.width_choices):
            # BN statistics gathered under sampled width masks trail the weights (the switchable-BN
            # problem of slimmable networks): recalibrate them on a fixed subset under the masks the
            # evaluation uses (deterministic, so the training RNG is untouched).
            from nas.evaluate import recalibrate_bn

            calib = data_mod.fixed_subset(data.train, 256, recipe.seed)[0].to(runtime.device)
            recalibrate_bn(net, calib, recipe.batch_size, only_bn=True)
        val = data_mod.loader(data, data.val, recipe.batch_size, workers=recipe.workers)
        val_acc = engine.evaluate(net, val, runtime)["top1"]
    return {"epoch": epoch + 1, "tau": tau, "train_loss": stats["train_loss"], "train_acc": stats["train_acc"],
            "val_acc": val_acc, "seconds": stats["seconds"]}


def epoch_line(stats: dict, recipe: Recipe) -> str:
    return (f"epoch {stats['epoch']}/{recipe.epochs}  loss {stats['train_loss']:.3f}  train {stats['train_acc']:.1f}%  "
            f"val {stats['val_acc']:.1f}%  tau {stats['tau']:.2f}  ({stats['seconds']:.0f}s)")


def payload(net: Supernet, optimizer, space: SearchSpace, data: data_mod.Data, recipe: Recipe, epoch: int,
            history: list[dict]) -> dict:
    """The checkpoint after `epoch` (0-based): the one format single-process and Ray training write."""
    return {"space": space.to_dict(), "num_classes": data.num_classes, "img_size": recipe.img_size,
            "recipe": recipe.to_dict(), "epoch": epoch + 1, "history": history,
            "state_dict": net.state_dict(), "optimizer": optimizer.state_dict(), "rng": checkpoint.rng_state(),
            "alpha": {n: p.detach().clone() for n, p in net.named_parameters() if n.endswith(".alpha")}}


def build(recipe: Recipe) -> tuple[SearchSpace, data_mod.Data, Supernet, Any, Any]:
    """Space, data, supernet (seeded init), optimizer and scheduler of a recipe."""
    space = load_space(recipe)
    data = data_mod.load(recipe.data, recipe.img_size, recipe.seed)
    torch.manual_seed(recipe.seed)
    net = Supernet(space, num_classes=data.num_classes, img_size=recipe.img_size, train_widths=recipe.train_widths)
    optimizer = create_optimizer_v2(_param_groups(net, recipe), opt="adamw", lr=recipe.lr, weight_decay=0.0)
    # every worker of a data-parallel run takes this many updates an epoch (drop_last batches)
    updates = len(data.train) // recipe.batch_size
    scheduler = engine.cosine_schedule(optimizer, lr=recipe.lr, min_lr=recipe.lr * 1e-2, epochs=recipe.epochs,
                                       warmup_epochs=recipe.warmup_epochs, updates_per_epoch=updates)
    return space, data, net, optimizer, scheduler
