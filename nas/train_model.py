"""``nas train CONFIG``: train one concrete ArchConfig as a standalone model.

Two ways to start, as the papers do:

* ``--init scratch`` – a fresh initialisation, trained with the EfficientFormer paper's recipe
  (§5.1: AdamW, cosine schedule with warm-up, label smoothing, optional hard distillation);
* ``--init inherited`` – OFA-style fine-tuning of the sub-network's inherited weights (the
  ``.pt`` that ``nas slim`` writes next to the config), or ``--init PATH``: a ``supernet.pt`` (the
  sub-network's prefix slices, channels in importance order and BN recalibrated as slim does) or
  an earlier ``model.pt``.

The recipe is timm's parts: ``create_optimizer_v2`` (AdamW; no weight decay on norms, biases and
the model's ``no_weight_decay()``), ``CosineLRScheduler`` with warm-up (stepped per update), label smoothing
(``LabelSmoothingCrossEntropy``), ``Mixup`` with ``SoftTargetCrossEntropy`` when mixup/cutmix is
on, ``create_transform`` with RandAugment and random erasing for image folders, ``ModelEmaV3``
with decay warm-up, stochastic depth (``--drop-path-rate``, timm's ``DropPath`` with timm's
linear rule), gradient clipping and accumulation (``nas.engine``).

Distillation (``--teacher`` with ``--distill soft|hard``): the teacher is a supernet or model
checkpoint of this tool, or a timm model name with ``--teacher-weights``. EfficientFormer and
iFormer train their distillation head on the teacher's signal (DeiT: the class head learns the
labels, the distillation head the teacher; deploy averages them); other families add the
distillation term to the single head's loss. timm's ``LogitDistillationTask`` covers only the
soft, single-head case and needs a ``pretrained_cfg`` for input normalisation, so the two
loss terms are written here.

``model.pt`` (atomic, every epoch) holds the config, the weights, EMA weights, optimizer,
scaler and every RNG stream, and the data order of an epoch depends only on (seed, epoch):
``--resume`` after a kill reproduces the uninterrupted run on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas import checkpoint, data as data_mod, engine, runs
from nas.engine import option
from nas.errors import UserError
from nas.core import io
from supernets.config import ArchConfig, ConfigError
from supernets.layers import set_drop_path
from supernets.registry import get_family

MODEL = "model.pt"
METRICS = "metrics.csv"
CURVES = "curves.png"
DISTILL = ("none", "soft", "hard")


@dataclass
class TrainRecipe(engine.RecipeBase):
    # the shared fields `nas train` sets differently, or offers where train-supernet does not
    data: str = option("digits", "digits | fashion-mnist[:DIR] | ImageFolder root (default: the data of the supernet "
                       "the config came from, else digits)", cli_default=None)
    img_size: int = option(64, "training resolution (default: the supernet's, else 64 px for digits and "
                           "fashion-mnist and the config's deploy resolution for an image folder)", cli_default=None)
    epochs: int = option(30, "default {default}", cli_default=None, runtime=True)
    lr: float = option(1e-3)
    weight_decay: float = option(0.025)
    warmup_epochs: int = option(1)
    label_smoothing: float = option(0.1, "label smoothing", flag="--smoothing")
    workers: int = option(4, "data loader processes for image folders", flag="--loader-workers", runtime=True)

    min_lr_ratio: float = option(0.01, cli=False)
    mixup: float = option(0.0, "mixup alpha (timm Mixup; 0 = off)")
    cutmix: float = option(0.0, "cutmix alpha (0 = off)")
    auto_augment: str = option("rand-m9-mstd0.5-inc1", "RandAugment policy for image folders ('' = off)", flag="--aa")
    re_prob: float = option(0.25, "random erasing probability for image folders", flag="--reprob")
    drop_path_rate: float = option(0.0, "stochastic depth at the last block, linear from 0 at the first (timm "
                                   "DropPath)")
    ema_decay: float = option(0.9998, "EMA decay with warm-up (timm ModelEmaV3; 0 = off)")
    clip_grad: float = option(0.0, "gradient norm clip (0 = off)")
    accum_steps: int = option(1, "gradient accumulation steps")
    init: str = option("scratch", "scratch | inherited (the .pt slim wrote next to the config) | PATH (a supernet.pt: "
                       "the sub-network's slices; or a model.pt) (default: {default}; a model.pt CONFIG: itself)",
                       cli_default=None)
    teacher: str | None = option(None, "distillation teacher: a supernet.pt or model.pt, or a timm model name with "
                                 "--teacher-weights")
    teacher_weights: str | None = option(None, "state dict of a timm teacher")
    distill: str = option("none", choices=DISTILL)
    distill_weight: float = option(0.5, "weight of the distillation term")
    distill_temperature: float = option(1.0, "temperature of soft distillation")
    compile: bool = option(False, "torch.compile the training step", runtime=True)

    def check(self) -> None:
        super().check()
        if self.accum_steps < 1:
            raise UserError(f"--accum-steps {self.accum_steps} must be >= 1")
        if self.distill not in DISTILL:
            raise UserError(f"--distill {self.distill!r}: use one of {', '.join(DISTILL)}")
        if (self.distill != "none") != (self.teacher is not None):
            raise UserError("--distill soft|hard and --teacher go together: give both or neither")
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise UserError(f"--batch-size {self.batch_size}: mixup/cutmix pair images, use an even batch size")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise UserError(f"--drop-path-rate {self.drop_path_rate}: must be in [0, 1)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"--ema-decay {self.ema_decay}: must be in [0, 1)")


# ---------------------------------------------------------------------------- initial weights
def inherited_path(config_path: Path) -> Path:
    return config_path.with_suffix(".pt")


def initial_state(init: str, config: ArchConfig, config_path: Path | None, data: data_mod.Data | None,
                  seed: int) -> tuple[dict[str, torch.Tensor] | None, int | None]:
    """(state dict or None for scratch, the resolution those weights were trained at)."""
    if init == "scratch":
        return None, None
    if init == "inherited":
        if config_path is None:
            raise UserError("--init inherited needs the config file that `nas slim` wrote (its weights sit next to it)")
        path = inherited_path(config_path)
        if not path.is_file():
            raise UserError(f"--init inherited: no {path.name} next to {config_path} (nas slim and nas search write "
                            "one per emitted config); use --init scratch or --init SUPERNET.pt")
        ckpt = checkpoint.load(path, (checkpoint.MODEL_FORMAT,))
        return ckpt["state_dict"], ckpt["img_size"]
    path = Path(init)
    ckpt = checkpoint.load(path, (checkpoint.FORMAT, checkpoint.MODEL_FORMAT))
    if ckpt["format"] == checkpoint.MODEL_FORMAT:   # a trained model: the weights eval and export use
        return (ckpt.get("ema") or ckpt["state_dict"]), ckpt["img_size"]
    return _from_supernet(ckpt, path, config, data, seed), ckpt["img_size"]


def _from_supernet(ckpt: dict, path: Path, config: ArchConfig, data: data_mod.Data | None, seed: int) -> dict:
    """The config's sub-network of a supernet as slim evaluates it: channels in slim's default
    order (``nas.slim.channel_order``), prefix slices, BN recalibrated on the same training images
    (slim's default calibration subset)."""
    from nas.evaluate import default_subsets, recalibrate_bn
    from supernets.config import Choice

    net = checkpoint.build_supernet(ckpt).eval()
    if net.space.family != config.family:
        raise UserError(f"--init {path}: a {net.space.family} supernet cannot initialise a {config.family} config")
    try:
        choice = Choice.from_config(config, net.space)
    except ConfigError as e:
        raise UserError(f"--init {path}: the config is not in that supernet's space ({e})") from None
    from nas.slim import channel_order

    if channel_order("auto", net) == "importance":
        net.reorder_channels()
    model = net.subnet(choice)
    if data is not None:
        calib_images = default_subsets(ckpt["img_size"])[0]
        recalibrate_bn(model, data_mod.fixed_subset(data.train, calib_images, seed)[0], 128)
    return model.state_dict()


def _with_distillation_head(config: ArchConfig, state: dict | None) -> tuple[ArchConfig, dict | None]:
    """The config with its family's distillation head on; inherited weights lack that head, so it
    starts as a copy of the class head (both then see the same features)."""
    config = config.replace(head={**config.head, "distillation": True})
    if state is not None and not any(k.startswith("head.head_dist.") for k in state):
        state = dict(state)
        for k in [k for k in state if k.startswith("head.head.")]:
            state["head.head_dist." + k[len("head.head."):]] = state[k].clone()
    return config, state


# ---------------------------------------------------------------------------- teacher
def load_teacher(spec: str, weights: str | None, num_classes: int, img_size: int) -> nn.Module:
    """A frozen teacher in eval mode: a nas supernet or model checkpoint, or a timm model name
    whose weights come from `weights` (no downloads here)."""
    path = Path(spec)
    if path.is_file():
        ckpt = checkpoint.load(path, (checkpoint.FORMAT, checkpoint.MODEL_FORMAT))
        if ckpt["img_size"] != img_size:
            raise UserError(f"--teacher {spec} was trained at {ckpt['img_size']} px; train the student at "
                            f"--img-size {ckpt['img_size']}")
        if ckpt["format"] == checkpoint.FORMAT:
            teacher = checkpoint.build_supernet(ckpt)
            teacher.set_mixing(ckpt["recipe"].get("mixing", "soft"), ckpt["recipe"].get("tau_min", 0.5))
        else:
            teacher = build_model(ckpt, path, ema=True)
        classes = teacher.num_classes
    else:
        import timm

        if not timm.list_models(spec):
            raise UserError(f"--teacher {spec}: neither a checkpoint file nor a timm model name "
                            "(list names with timm.list_models())")
        if weights is None:
            raise UserError(f"--teacher {spec}: a timm teacher needs --teacher-weights STATE_DICT.pt "
                            "(pretrained weights cannot be downloaded here)")
        teacher = timm.create_model(spec, num_classes=num_classes)
        state = checkpoint.load_state_dict_file(weights, "--teacher-weights")
        checkpoint.load_weights(teacher, state, f"--teacher-weights {weights}")
        classes = num_classes
    if classes != num_classes:
        raise UserError(f"--teacher {spec} predicts {classes} classes, the data has {num_classes}")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def load_trained(path: Path, ema: bool = True, img_size: int | None = None):
    """(model, config, checkpoint, whether the EMA weights were taken) of a model checkpoint."""
    ckpt = checkpoint.load(path, (checkpoint.MODEL_FORMAT,))
    use_ema = ema and ckpt.get("ema") is not None
    return build_model(ckpt, path, ema=use_ema, img_size=img_size), checkpoint.model_config(ckpt, path), ckpt, use_ema


def trained_data(ckpt: dict, img_size: int, source: str | None = None) -> data_mod.Data:
    """The data a model checkpoint was trained on (or `source`), split as in its training."""
    return data_mod.load(source or ckpt.get("data") or data_mod.DIGITS, img_size,
                         (ckpt.get("recipe") or {}).get("seed", 0))


def build_model(ckpt: dict, path: Path, ema: bool = True, img_size: int | None = None) -> nn.Module:
    """The model of a model checkpoint (EMA weights when present and `ema`), train form, eval
    mode, built for `img_size` (default: the resolution it was trained at)."""
    config = checkpoint.model_config(ckpt, path)
    model = get_family(config.family).build(config, img_size=img_size or ckpt["img_size"])
    state = ckpt.get("ema") if ema and ckpt.get("ema") is not None else ckpt["state_dict"]
    checkpoint.load_weights(model, state, str(path))
    return model.eval()


class Loss:
    """Task loss (label smoothing, or soft targets under mixup) plus the distillation term."""

    def __init__(self, recipe: TrainRecipe, num_classes: int, teacher: nn.Module | None, dist_head: bool):
        from timm.data import Mixup
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        self.mixup = None
        if recipe.mixup or recipe.cutmix:
            self.mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                               label_smoothing=recipe.label_smoothing, num_classes=num_classes)
            self.task = SoftTargetCrossEntropy()
        else:
            self.task = LabelSmoothingCrossEntropy(recipe.label_smoothing) if recipe.label_smoothing else \
                nn.CrossEntropyLoss()
        self.teacher, self.dist_head = teacher, dist_head
        self.kind, self.weight, self.t = recipe.distill, recipe.distill_weight, recipe.distill_temperature

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = y
        if self.mixup is not None:
            x, target = self.mixup(x, y)
        out = model(x)
        cls_out, dist_out = out if isinstance(out, tuple) else (out, out)
        loss = self.task(cls_out, target)
        if self.teacher is None:
            return loss, cls_out
        with torch.no_grad():
            teacher_out = self.teacher(x).float()
        if self.kind == "hard":    # DeiT: the teacher's top-1 as a label
            kd = F.cross_entropy(dist_out, teacher_out.argmax(1))
        else:                      # Hinton: KL of the tempered distributions, times T^2
            kd = F.kl_div(F.log_softmax(dist_out / self.t, 1), F.log_softmax(teacher_out / self.t, 1),
                          reduction="batchmean", log_target=True) * self.t ** 2
        return (1 - self.weight) * loss + self.weight * kd, (cls_out + dist_out) / 2 if self.dist_head else cls_out


# ---------------------------------------------------------------------------- training
@dataclass
class Trained:
    path: Path
    history: list[dict]
    recipe: TrainRecipe

    @property
    def final(self) -> dict:
        return self.history[-1]


def train_model(config: ArchConfig, recipe: TrainRecipe, out_dir: Path, *, config_path: Path | None = None,
                resume: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> Trained:
    """Train `config` as `recipe` says into `out_dir` (``model.pt``, ``metrics.csv``, ``curves.png``)."""
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3, random_seed

    ckpt_path = out_dir / MODEL
    run = engine.ResumableRun.open(recipe, ckpt_path, resume=resume, formats=(checkpoint.MODEL_FORMAT,),
                                   holds="a model", outputs=(METRICS, CURVES))
    runtime = recipe.runtime()
    data = data_mod.load(recipe.data, recipe.img_size, recipe.seed, augment=(recipe.auto_augment, recipe.re_prob))
    if data.num_classes != config.num_classes:
        config = config.replace(num_classes=data.num_classes)   # the head follows the data
    state, trained_at = (None, None) if run.resuming else initial_state(recipe.init, config, config_path, data, recipe.seed)
    if trained_at is not None and trained_at != recipe.img_size:
        log(f"note: the --init weights were trained at {trained_at} px, training goes on at {recipe.img_size} px")
    teacher = None
    if recipe.teacher is not None:
        teacher = runtime.prepare(load_teacher(recipe.teacher, recipe.teacher_weights, data.num_classes, recipe.img_size))
    family = get_family(config.family)
    random_seed(recipe.seed)   # torch, numpy (timm's Mixup draws from it) and Python's random
    model = family.build(config, img_size=recipe.img_size)
    dist_head = teacher is not None and model.head.distillable
    if dist_head:
        config, state = _with_distillation_head(config, state)
        random_seed(recipe.seed)
        model = family.build(config, img_size=recipe.img_size)
        model.head.distilled_training = True
    if state is not None:
        checkpoint.load_weights(model, state, f"--init {recipe.init}")
    set_drop_path(model, recipe.drop_path_rate)
    runtime.prepare(model)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=recipe.lr, weight_decay=recipe.weight_decay)
    batches_per_epoch = len(data.train) // recipe.batch_size          # drop_last batches
    updates_per_epoch = -(-batches_per_epoch // recipe.accum_steps)      # the last partial group steps too
    scheduler = engine.cosine_schedule(optimizer, lr=recipe.lr, min_lr=recipe.lr * recipe.min_lr_ratio,
                                       epochs=recipe.epochs, warmup_epochs=recipe.warmup_epochs,
                                       updates_per_epoch=updates_per_epoch)
    ema = ModelEmaV3(model, decay=recipe.ema_decay, use_warmup=True) if recipe.ema_decay else None
    loss_fn = Loss(recipe, data.num_classes, teacher, dist_head)
    val = data_mod.loader(data, data.val, recipe.batch_size * 2, workers=recipe.workers,
                          pin_memory=runtime.device.type == "cuda")
    step_model = torch.compile(model) if recipe.compile else model

    run.restore(state_dict=model, optimizer=optimizer, ema=None if ema is None else ema.module, scaler=runtime.scaler)
    if run.resuming:
        config, step = checkpoint.model_config(run.saved, ckpt_path), run.saved["step"]
        log(f"resuming {out_dir} at epoch {run.start_epoch + 1}/{recipe.epochs}")
    else:
        step = 0
        out_dir.mkdir(parents=True, exist_ok=True)
        run.history.append(_epoch_row(0, float("nan"), {}, _evaluate(model, ema, val, runtime), 0.0))
        log(f"epoch 0/{recipe.epochs}  val {run.history[0]['val_top1']:.2f}% (initial weights: {recipe.init})")

    def update_ema():
        nonlocal step
        step += 1
        if ema is not None:
            ema.update(model, step=step)

    def train_one(epoch: int) -> dict:
        scheduler.step_update(epoch * updates_per_epoch)
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        batches = data_mod.train_loader(data, recipe.batch_size, recipe.seed, epoch, recipe.workers,
                                        pin_memory=runtime.device.type == "cuda")
        stats = engine.train_epoch(step_model, batches, optimizer, lambda x, y: loss_fn(step_model, x, y), runtime,
                                   desc=f"epoch {epoch + 1}/{recipe.epochs}", progress=progress,
                                   clip_grad=recipe.clip_grad or None, accum_steps=recipe.accum_steps,
                                   after_update=update_ema, scheduler=scheduler,
                                   updates_done=epoch * updates_per_epoch)
        return _epoch_row(epoch + 1, lr, stats, _evaluate(model, ema, val, runtime), stats["seconds"])

    def save(epoch: int, history: list[dict]) -> None:
        checkpoint.save_model(ckpt_path, config, model, recipe.img_size, recipe=recipe.to_dict(), epoch=epoch + 1,
                              step=step, history=history, complete=epoch + 1 == recipe.epochs,
                              ema=None if ema is None else {k: v.detach().cpu() for k, v in ema.module.state_dict().items()},
                              optimizer=optimizer.state_dict(),
                              scaler=runtime.scaler.state_dict() if runtime.scaler is not None else None,
                              rng=checkpoint.rng_state(), data=recipe.data)
        write_metrics(history, out_dir, f"{config.name or config.family}: {recipe.init}")
        row = history[-1]
        log(f"epoch {epoch + 1}/{recipe.epochs}  loss {row['train_loss']:.3f}  val {row['val_top1']:.2f}% "
            f"(top-5 {row['val_top5']:.2f}%)" + (f"  EMA {row['ema_top1']:.2f}%" if ema is not None else "")
            + f"  {row['samples_per_s']:.0f} img/s")

    return Trained(ckpt_path, run.epochs(recipe.epochs, train_one, save), recipe)


def _evaluate(model, ema, val, runtime) -> dict:
    raw = engine.evaluate(model, val, runtime)
    out = {"val_top1": raw["top1"], "val_top5": raw["top5"], "val_loss": raw["loss"]}
    if ema is not None:
        e = engine.evaluate(ema.module, val, runtime)
        out.update(ema_top1=e["top1"], ema_top5=e["top5"])
    return out


def _epoch_row(epoch: int, lr: float, stats: dict, val: dict, seconds: float) -> dict:
    nan = float("nan")
    return {"epoch": epoch, "lr": lr, "train_loss": stats.get("train_loss", nan), "train_acc": stats.get("train_acc", nan),
            **val, "ema_top1": val.get("ema_top1", nan), "ema_top5": val.get("ema_top5", nan),
            "samples_per_s": stats["samples"] / seconds if seconds else nan, "seconds": seconds}


def write_metrics(history: list[dict], out_dir: Path, title: str) -> list[Path]:
    """``metrics.csv`` (one row per epoch, epoch 0 = the initial weights) and ``curves.png``."""
    rows = [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in history]
    csv_path = io.write_csv(out_dir / METRICS, rows)
    png_path = out_dir / CURVES
    with io.png_figure(png_path, 1, 2, figsize=(9, 3.6)) as (fig, (ax_loss, ax_acc)):
        epochs = [r["epoch"] for r in history]
        ax_loss.plot(epochs[1:], [r["train_loss"] for r in history[1:]], "-o", ms=3, label="train loss")
        ax_loss.plot(epochs, [r["val_loss"] for r in history], "-o", ms=3, label="val loss")
        ax_loss.set(xlabel="epoch", ylabel="loss")
        ax_acc.plot(epochs, [r["val_top1"] for r in history], "-o", ms=3, label="val top-1")
        if any(r["ema_top1"] == r["ema_top1"] for r in history):
            ax_acc.plot(epochs, [r["ema_top1"] for r in history], "-s", ms=3, label="val top-1 (EMA)")
        ax_acc.set(xlabel="epoch", ylabel="top-1 (%)")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
    return [csv_path, png_path]


def train_config(config_path: str | Path, *, out_dir: str | Path | None = None, runs_dir: str | Path = "runs",
                 name: str | None = None, progress: bool = True, log: Callable[[str], None] = print,
                 **fields) -> Trained:
    """`nas train CONFIG`: train the ArchConfig at `config_path` with a `TrainRecipe` of `fields`.

    `data` and `img_size` default to those of the supernet run the config was slimmed from
    (digits at 64 px otherwise). `config_path` may be a trained ``model.pt``: its config is
    trained from its weights (unless `init` says otherwise) on its data, by default at its
    resolution; ``--img-size`` then fine-tunes it at the resolution it deploys at, into
    ``<its folder>-<px>px`` beside its own folder. The output goes to `out_dir`, else ``<run>/train/<name>``, with
    `name` ``<config>-<init>`` unless given. A run that fails before its first checkpoint leaves
    no directory behind."""
    config_path = Path(config_path)
    if config_path.suffix == ".pt":   # a trained model: its own config, fine-tuned from its weights
        ckpt = checkpoint.load(config_path, (checkpoint.MODEL_FORMAT,))
        config = checkpoint.model_config(ckpt, config_path)
        defaults = {"data": ckpt.get("data") or data_mod.DIGITS, "img_size": ckpt["img_size"]}
        fields["init"] = fields.get("init") or str(config_path)
    else:
        config = ArchConfig.load(config_path)
        defaults = run_defaults(config_path)
    data = fields.pop("data", None) or defaults.get("data", data_mod.DIGITS)
    img_size = (fields.pop("img_size", None) or defaults.get("img_size")
                or data_mod.default_img_size(data, lambda: config.resolution))
    recipe = TrainRecipe(data=data, img_size=img_size, **{k: v for k, v in fields.items() if v is not None})
    recipe.check()
    if out_dir is None and config_path.suffix == ".pt":
        # next to the model's own folder: <run>/train/<its name>-<px>px
        out_dir = config_path.resolve().parent.parent / (name or f"{config_path.parent.name}-{img_size}px")
    elif out_dir is None:
        init = recipe.init if recipe.init in ("scratch", "inherited") else Path(recipe.init).stem
        name = name or f"{config_path.stem}-{init}" + (f"-{recipe.distill}kd" if recipe.teacher else "")
        out_dir = default_out_dir(config_path, Path(runs_dir), name)
    out_dir = Path(out_dir)
    _log_start(config.name or str(config_path), config.family, recipe, out_dir, log)
    with runs.removed_if_stillborn(out_dir):
        return train_model(config, recipe, out_dir, config_path=config_path, progress=progress, log=log)


def resume_training(out_dir: str | Path, *, progress: bool = True, log: Callable[[str], None] = print,
                    **changes) -> Trained:
    """Continue the training in `out_dir` from its last epoch. `changes` may set runtime fields
    (`epochs`, `device`, `threads`, ...); any other field must equal the run's
    (`RecipeChangeError` otherwise)."""
    out_dir = Path(out_dir)
    ckpt = checkpoint.load(out_dir / MODEL, (checkpoint.MODEL_FORMAT,))
    recipe = TrainRecipe.resumed(ckpt["recipe"], changes)
    recipe.check()
    config = checkpoint.model_config(ckpt, out_dir / MODEL)
    _log_start(config.name or config.family, config.family, recipe, out_dir, log)
    return train_model(config, recipe, out_dir, resume=True, progress=progress, log=log)


def _log_start(what: str, family: str, recipe: TrainRecipe, out_dir: Path, log: Callable[[str], None]) -> None:
    log(f"training {what} ({family}) from {recipe.init} on {recipe.data} at {recipe.img_size} px, "
        f"{recipe.epochs} epochs, {recipe.runtime().device.type}{', ' + recipe.amp if recipe.amp != 'off' else ''}"
        f"{f', {recipe.distill} distillation from {recipe.teacher}' if recipe.teacher else ''} -> {out_dir}")


def evaluate_trained(path: str | Path, *, device: str = "iphone12", tables_dir: str | Path = "runs/tables",
                     data: str | None = None, ema: bool = True, compute: str = "auto", progress: bool = True) -> dict:
    """`nas eval MODEL.pt`: top-1 and top-5 of a model checkpoint on the validation split of the
    data it was trained on (or `data`, with the same classes), at the resolution it was trained
    at; its params, MACs and latency on `device`'s table at the config's deploy resolution (the
    network that would ship; ``nas.report.costs``)."""
    from lut import store
    from nas.report import costs
    from lut.breakdown import swish_note

    path = Path(path)
    model, config, ckpt, use_ema = load_trained(path, ema=ema)
    source = trained_data(ckpt, ckpt["img_size"], data)
    if source.num_classes != config.num_classes:
        raise UserError(f"--data {source.source} has {source.num_classes} classes, the model predicts "
                        f"{config.num_classes}")
    runtime = engine.Runtime.of(compute)
    runtime.prepare(model)
    scores = engine.evaluate(model, data_mod.loader(source, source.val, 256, workers=4), runtime)
    table, predict = store.open_predictor(device, config.resolution, Path(tables_dir), progress)
    latency_ms = predict(config)
    return {**scores, "latency_ms": latency_ms, "latency_trust": table.trust(config, latency_ms),
            "latency_swish_note": swish_note(table, config),
            "table": store.provenance(table)["table"], "ema": use_ema,
            "data": source.source, "images": len(source.val), "img_size": ckpt["img_size"],
            "resolution": config.resolution, **costs(config)}


def finetune_hint(model_path: str | Path, resolution: int) -> str:
    """The command that fine-tunes a trained model at `resolution` (``nas train MODEL.pt``)."""
    return f"nas train {model_path} --img-size {resolution} --epochs 5"


def default_out_dir(config_path: Path, runs_root: Path, name: str) -> Path:
    """``<run>/train/<name>`` for a config inside a supernet run (``<run>/slim/x.yaml``), else
    ``<runs>/train/<name>``."""
    run_dir = config_path.resolve().parent.parent
    if (run_dir / runs.RUN_INFO).is_file():
        return run_dir / "train" / name
    return runs_root / "train" / name


def run_defaults(config_path: Path) -> dict:
    """What a config emitted from a supernet run implies: that run's data and training size."""
    if config_path.with_suffix(".pt").is_file():
        try:
            ckpt = checkpoint.load(config_path.with_suffix(".pt"), (checkpoint.MODEL_FORMAT,))
            return {"data": ckpt.get("data", data_mod.DIGITS), "img_size": ckpt["img_size"]}
        except UserError:
            pass
    info = runs.read_info(config_path.resolve().parent.parent)
    recipe = info.get("recipe") or {}
    return {k: recipe[k] for k in ("data", "img_size") if k in recipe}
