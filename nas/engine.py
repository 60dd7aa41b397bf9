"""What supernet and model training share: the device and precision, one training epoch, and
top-1/top-5 evaluation.

* ``--device auto`` takes CUDA when present, then Apple's MPS, else the CPU.
* ``--amp bf16|fp16|off``: autocast; fp16 adds timm's ``NativeScaler`` (a GradScaler). fp16 on
  the CPU is refused (no fp16 autocast kernels there); bf16 works on every device.
* The training step never waits for the device: loss and accuracy accumulate as device tensors
  and are read (and checked for divergence) every ``SYNC_EVERY`` steps and at the epoch's end.
* Determinism: on the CPU every run of the same recipe is bitwise identical (the resume tests
  rely on it). On a GPU it is best effort: cuDNN and atomics may reorder sums.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from nas.errors import RecipeChangeError, UserError

DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("off", "bf16", "fp16")
SYNC_EVERY = 50


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise UserError(f"--device {name!r}: use one of {', '.join(DEVICES)}")
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch; use --device cpu (or auto)")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        # Training asks for deterministic algorithms; cuBLAS honours that only with a fixed
        # workspace, read when its first handle is made (so before any CUDA matmul).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if name == "mps" and not mps:
        raise UserError("--device mps: Apple's MPS backend is not available here; use --device cpu (or auto)")
    return torch.device(name)


@dataclass
class Runtime:
    """Where and in what precision a model trains."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: str = "off"
    channels_last: bool = False

    def __post_init__(self):
        if self.amp not in AMP_MODES:
            raise UserError(f"--amp {self.amp!r}: use one of {', '.join(AMP_MODES)}")
        if self.amp == "fp16" and self.device.type == "cpu":
            raise UserError("--amp fp16 needs a GPU (the CPU has no fp16 autocast); use --amp bf16 or off")
        self.scaler = None
        if self.amp == "fp16":
            from timm.utils import NativeScaler

            self.scaler = NativeScaler(device=self.device.type)

    @classmethod
    def of(cls, device: str = "cpu", amp: str = "off", channels_last: bool = False) -> "Runtime":
        return cls(resolve_device(device), amp, channels_last)

    def autocast(self):
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        x = x.to(self.device, non_blocking=non_blocking)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=non_blocking)


_SAME = object()


def option(default: Any, help: str | None = None, *, flag: str | None = None, choices: tuple | None = None,
           cli_default: Any = _SAME, runtime: bool = False, cli: bool = True):
    """A recipe field declared once: its default, and from it the command-line flag that sets it
    (``--field-name`` unless `flag`; `help`, where ``{default}`` is the field's default; `choices`;
    a bool is a switch) with the flag's default (`cli_default`: None when the library decides,
    from the data or the config), and whether a resume may change it (`runtime`: where and how
    fast a run goes, not what it computes). `cli=False`: the field has no flag."""
    meta = {"flag": flag, "help": help, "choices": choices, "runtime": runtime, "cli": cli,
            "cli_default": default if cli_default is _SAME else cli_default}
    return field(default=default, metadata=meta)


def recipe_flags(recipe: type) -> dict[str, dataclasses.Field]:
    """The flags a recipe class declares: argparse attribute -> its field."""
    return {(f.metadata["flag"] or "--" + f.name.replace("_", "-"))[2:].replace("-", "_"): f
            for f in dataclasses.fields(recipe) if f.metadata.get("cli")}


def add_recipe_flags(parser, recipe: type) -> None:
    """One flag per field `recipe` declares with `option`, in declaration order."""
    import argparse

    for f in dataclasses.fields(recipe):
        m = f.metadata
        if not m.get("cli"):
            continue
        name = m["flag"] or "--" + f.name.replace("_", "-")
        text = m["help"].format(default=f.default) if m["help"] else None
        if isinstance(f.default, bool):
            action = argparse.BooleanOptionalAction if f.default else "store_true"
            parser.add_argument(name, action=action, default=m["cli_default"], help=text)
            continue
        kind = type(f.default) if isinstance(f.default, (int, float)) else None
        parser.add_argument(name, type=kind, default=m["cli_default"], choices=m["choices"], help=text)


@dataclass
class RecipeBase:
    """What both training recipes (supernet, model) share, stored as a plain dict in checkpoints.
    Every field is declared once (`option`): the CLI's flags and the resume rule derive from it."""

    data: str = option("digits", "'digits' (embedded), 'fashion-mnist' (Debian's dataset-fashion-mnist; "
                       "fashion-mnist:DIR for IDX files elsewhere) or an ImageFolder root with train/ val/")
    img_size: int = option(64, "training resolution (default: 64 px for digits and fashion-mnist, the space's "
                           "deploy resolution for an image folder)", cli_default=None)
    epochs: int = option(6, "default {default}", cli_default=None, runtime=True)
    batch_size: int = option(64)
    lr: float = option(2e-3)
    weight_decay: float = option(0.025, cli=False)
    warmup_epochs: int = option(1, cli=False)
    label_smoothing: float = option(0.1, "label smoothing", flag="--smoothing", cli=False)
    seed: int = option(0)
    threads: int = option(2, runtime=True)
    workers: int = option(4, "data loader processes for image folders", flag="--loader-workers", runtime=True,
                          cli=False)
    # where it trains ('auto': CUDA when present); not part of the result. The command takes a GPU
    # when there is one ('auto'), the library the CPU.
    device: str = option("cpu", "where to train: auto (CUDA when present, else MPS, else CPU), cpu, cuda, mps",
                         choices=DEVICES, cli_default="auto", runtime=True)
    amp: str = option("off", "autocast precision (fp16 adds a GradScaler)", choices=AMP_MODES)
    channels_last: bool = option(False, "channels-last memory format (faster convs)", runtime=True)

    @classmethod
    def runtime_fields(cls) -> tuple[str, ...]:
        """Fields that say where and how fast a run goes, not what it computes: a resume may change them."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("runtime"))

    def check(self) -> None:
        """Every flag in range, as one line naming it (before anything is built or written)."""
        def flag(name: str) -> str:
            return "--" + name.replace("_", "-")

        for name in ("epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise UserError(f"{flag(name)} {getattr(self, name)} must be >= 1")
        for name in ("workers", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise UserError(f"{flag(name)} {getattr(self, name)} must be >= 0")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--lr {self.lr} must be a finite number > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"--weight-decay {self.weight_decay} must be a finite number >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError(f"--label-smoothing {self.label_smoothing} must be in [0, 1)")
        if self.img_size < 32 or self.img_size % 32:
            raise UserError(f"--img-size {self.img_size} is not a positive multiple of 32 (the network downsamples by 32)")
        from nas import data

        self.data = data.checked_source(self.data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    @classmethod
    def resumed(cls, recorded: dict[str, Any], changes: dict[str, Any]):
        """The recipe a run recorded, with `changes`. Only runtime fields may change: any other
        field given with another value than the run's raises `RecipeChangeError`."""
        recorded = cls.from_dict(recorded).to_dict()   # with the defaults of fields added since it was written
        names = {f.name for f in dataclasses.fields(cls)}
        for name, value in changes.items():
            if name not in names:
                raise TypeError(f"{cls.__name__} has no field {name!r}")
            if name not in cls.runtime_fields() and value != recorded.get(name):
                raise RecipeChangeError(name, value, recorded.get(name))
        return cls.from_dict({**recorded, **changes})

    def runtime(self) -> "Runtime":
        return Runtime.of(self.device, self.amp, self.channels_last)


class ResumableRun:
    """The life of every training run (the supernet's, `nas train`'s, each Ray Train worker's):
    one checkpoint, rewritten atomically after every epoch, from which a killed run resumes to the
    uninterrupted run's result on the CPU. That needs the weights, the optimizer (and EMA, scaler)
    and every RNG stream back, and data whose order depends only on (seed, epoch).

    The caller builds what it trains, `restore`s it (nothing happens on a fresh run) and hands
    `epochs` what differs between runs: one epoch's training (-> its history row) and the
    checkpoint writer."""

    def __init__(self, saved: dict[str, Any] | None = None, *, rng: bool = True):
        self.saved = saved
        self.start_epoch = int(saved["epoch"]) if saved else 0
        self.history: list[dict] = list(saved["history"]) if saved else []
        self._rng = rng

    @classmethod
    def open(cls, recipe: RecipeBase, path, *, resume: bool, formats: tuple[str, ...], holds: str,
             outputs: tuple[str, ...] = ()) -> "ResumableRun":
        """The run whose checkpoint is `path`, in this process: the recipe checked, threads and
        determinism set, the temp files a kill mid-write leaves removed (the checkpoint's and
        those of the run's other `outputs`, file names next to it); then, with `resume`, the
        checkpoint (its recipe must be `recipe` but for runtime fields), else a refusal to start
        over a run that holds `holds` already."""
        from pathlib import Path

        from nas import checkpoint
        from nas.core import io

        path = Path(path)
        recipe.check()
        torch.set_num_threads(recipe.threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        for name in (path.name, *outputs):
            io.remove_stale_temps(path.parent / name)
        if not resume:
            if path.exists():
                raise UserError(f"{path.parent} already holds {holds}; use --resume {path.parent} to continue it, "
                                "or choose --name")
            return cls()
        if not path.is_file():
            raise UserError(f"--resume: no checkpoint at {path}; start without --resume")
        saved = checkpoint.load(path, formats)
        type(recipe).resumed(saved["recipe"], recipe.to_dict())   # the run's recipe but for runtime fields, or raises
        return cls(saved)

    @property
    def resuming(self) -> bool:
        return self.saved is not None

    def restore(self, **stateful) -> None:
        """Each named object (anything with ``load_state_dict``: the model, optimizer, an EMA
        module, a grad scaler) from the checkpoint's entry of that name, then the RNG streams:
        last, since loading may draw."""
        if self.saved is None:
            return
        from nas import checkpoint

        for name, target in stateful.items():
            if target is not None and self.saved.get(name) is not None:
                target.load_state_dict(self.saved[name])
        if self._rng:
            checkpoint.set_rng_state(self.saved["rng"])

    def epochs(self, total: int, train_one: Callable[[int], dict],
               save: Callable[[int, list[dict]], None]) -> list[dict]:
        """Epochs from where the run stands to `total`: ``train_one(epoch) -> row`` (0-based
        epoch), then ``save(epoch, history)`` writes the checkpoint. Returns the history."""
        for epoch in range(self.start_epoch, total):
            self.history.append(train_one(epoch))
            save(epoch, self.history)
        return self.history


def cosine_schedule(optimizer, *, lr: float, min_lr: float, epochs: int, warmup_epochs: int, updates_per_epoch: int):
    """timm's cosine schedule with linear warm-up, stepped per optimizer update rather than per
    epoch: an epoch-stepped warm-up would spend a whole short run (1-3 epochs) at the warm-up's
    starting rate. The warm-up lasts `warmup_epochs`, at most a fifth of the run."""
    from timm.scheduler import CosineLRScheduler

    total = max(epochs * updates_per_epoch, 1)
    warmup = min(warmup_epochs * updates_per_epoch, total // 5)
    return CosineLRScheduler(optimizer, t_initial=max(total - warmup, 1), lr_min=min_lr, warmup_t=warmup,
                             warmup_lr_init=min_lr, warmup_prefix=True, t_in_epochs=False)


def train_epoch(model: nn.Module, batches, optimizer, compute_loss: Callable, runtime: Runtime, *,
                desc: str, progress: bool = True, clip_grad: float | None = None, accum_steps: int = 1,
                after_update: Callable[[], None] | None = None, postfix: dict | None = None,
                scheduler=None, updates_done: int = 0) -> dict:
    """One pass over `batches`. ``compute_loss(x, y) -> (loss, logits)`` runs the forward;
    every `accum_steps` batches (and at the end) the optimizer steps, the per-update `scheduler`
    moves to the run's update count (`updates_done` before this epoch) and ``after_update()``
    runs (an EMA update). Returns the mean loss, top-1 against the hard labels, samples and seconds."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    zero = torch.zeros((), device=runtime.device)
    loss_sum, correct, seen = zero.clone(), zero.clone(), 0
    t0 = time.time()
    bar = tqdm(batches, desc=desc, disable=not progress, leave=False)
    n = len(batches) if hasattr(batches, "__len__") else None
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step_update(updates_done)
    for i, (x, y) in enumerate(bar):
        x, y = runtime.batch(x, y)
        with runtime.autocast():
            loss, logits = compute_loss(x, y)
        update = (i + 1) % accum_steps == 0 or (n is not None and i + 1 == n)
        scaled = loss / accum_steps if accum_steps > 1 else loss
        if runtime.scaler is not None:
            runtime.scaler(scaled, optimizer, clip_grad=clip_grad, parameters=params, need_update=update)
        else:
            scaled.backward()
            if update:
                if clip_grad is not None:
                    nn.utils.clip_grad_norm_(params, clip_grad)
                optimizer.step()
        if update:
            optimizer.zero_grad(set_to_none=True)
            updates_done += 1
            if scheduler is not None:
                scheduler.step_update(updates_done)
            if after_update is not None:
                after_update()
        seen += len(y)
        loss_sum += loss.detach().float() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        if (i + 1) % SYNC_EVERY == 0:
            _check_and_show(bar, loss_sum, correct, seen, postfix)
    bar.close()
    mean_loss, acc = _check_and_show(None, loss_sum, correct, seen, postfix)
    return {"train_loss": mean_loss, "train_acc": acc, "samples": seen, "seconds": time.time() - t0}


def _check_and_show(bar, loss_sum, correct, seen, postfix) -> tuple[float, float]:
    mean_loss = float(loss_sum) / max(seen, 1)
    if not math.isfinite(mean_loss):
        raise UserError(f"training diverged (loss {mean_loss}); lower --lr, or use --amp bf16 instead of fp16")
    acc = 100.0 * float(correct) / max(seen, 1)
    if bar is not None:
        bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{acc:.1f}", **(postfix or {}))
    return mean_loss, acc


@torch.no_grad()
def evaluate(model: nn.Module, batches, runtime: Runtime) -> dict:
    """Top-1 / top-5 (%) and mean cross-entropy of `model` (eval mode) over `batches`."""
    model.eval()
    zero = torch.zeros((), device=runtime.device)
    top1, top5, loss, seen = zero.clone(), zero.clone(), zero.clone(), 0
    for x, y in batches:
        x, y = runtime.batch(x, y)
        with runtime.autocast():
            out = model(x)
        out = out.float()
        k = min(5, out.shape[1])
        pred = out.topk(k, 1).indices
        top1 += (pred[:, 0] == y).sum()
        top5 += (pred == y[:, None]).any(1).sum()
        loss += nn.functional.cross_entropy(out, y, reduction="sum")
        seen += len(y)
    n = max(seen, 1)
    return {"top1": 100.0 * float(top1) / n, "top5": 100.0 * float(top5) / n, "loss": float(loss) / n}
