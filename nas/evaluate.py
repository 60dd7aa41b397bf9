"""Accuracy of a sub-network with inherited weights: BN recalibration, then a fixed val subset."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class Score:
    accuracy: float   # top-1 %, on the fixed validation subset
    loss: float       # mean cross-entropy on the same subset (breaks accuracy ties)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, batch_size: int, only_bn: bool = False) -> None:
    """Replace every BatchNorm's running statistics by exact averages over `images`.

    Inherited statistics belong to the supernet's mixed activations; a sub-network needs its own.
    ``only_bn``: every other module stays in eval mode (a supernet's Gumbel mixers then mix as in
    its evaluation, deterministically, so the statistics are those of the network evaluated).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all recalibration batches
    if only_bn:
        model.eval()
        for m in bns:
            m.train()
    else:
        model.train()
    for x in images.split(batch_size):
        model(x)
    for m, momentum in saved.items():
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Score:
    model.eval()
    correct, loss = 0, 0.0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        out = model(x)
        correct += int((out.argmax(1) == y).sum())
        loss += float(F.cross_entropy(out, y, reduction="sum"))
    n = max(len(labels), 1)
    return Score(100.0 * correct / n, loss / n)


# The subsets slimming and search score on, by default (`nas slim --calib-images/--val-images`).
# experiments/search_quality/rerank: against 17 networks' trained top-1, the supernet's Kendall τ
# was 0.45 with 256 calibration / 1,000 validation images, 0.66 with 256 / 10,000, 0.75 with
# 2,048 / 10,000: on 1,000 images top-1 has a binomial σ of ~0.9 points, more than the 0.5-point
# spread of the networks it ranks, and 256 images leave narrow sub-networks' BN statistics noisy.
CALIB_IMAGES = 2048
VAL_IMAGES = 10_000
# ... as far as their float32 tensors fit in this much memory together (at 224 px: 605 / 2,957)
EVAL_BYTES = 2 * 1024 ** 3


def default_subsets(img_size: int) -> tuple[int, int]:
    """(calibration, validation) images: CALIB_IMAGES and VAL_IMAGES, scaled down together when
    their tensors at `img_size` would exceed EVAL_BYTES (never below 256 and 1,000)."""
    fit = EVAL_BYTES // (3 * img_size * img_size * 4)
    scale = min(1.0, fit / (CALIB_IMAGES + VAL_IMAGES))
    return max(256, int(CALIB_IMAGES * scale)), max(1000, int(VAL_IMAGES * scale))


@dataclass
class Evaluator:
    """Scores models on fixed tensors: `calib` images recalibrate BN, (`val`, `labels`) score."""

    calib: torch.Tensor
    val: torch.Tensor
    labels: torch.Tensor
    batch_size: int = 128

    @classmethod
    def of_data(cls, source: str, img_size: int, data_seed: int, calib_images: int | None = None,
                val_images: int | None = None, seed: int = 0) -> "Evaluator":
        """The evaluator slimming and search use for a supernet trained on `source`: BN is
        recalibrated on `calib_images` fixed training images (drawn with `seed`), accuracy
        measured on `val_images` fixed validation images (drawn with `seed` + 1); unset, the
        sizes of `default_subsets`. A set smaller than its size is used whole."""
        from nas import data as data_mod

        default_calib, default_val = default_subsets(img_size)
        calib_images = default_calib if calib_images is None else calib_images
        val_images = default_val if val_images is None else val_images
        data = data_mod.load(source, img_size, data_seed)
        calib = data_mod.fixed_subset(data.train, calib_images, seed)[0]
        val_x, val_y = data_mod.fixed_subset(data.val, val_images, seed + 1)
        return cls(calib, val_x, val_y)

    def __call__(self, model: nn.Module) -> Score:
        return score(self.recalibrate(model), self.val, self.labels, self.batch_size)

    def recalibrate(self, model: nn.Module) -> nn.Module:
        """`model` with BN statistics of its own (eval mode), as it is scored."""
        recalibrate_bn(model, self.calib, self.batch_size)
        return model
