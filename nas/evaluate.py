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


@dataclass
class Evaluator:
    """Scores models on fixed tensors: `calib` images recalibrate BN, (`val`, `labels`) score."""

    calib: torch.Tensor
    val: torch.Tensor
    labels: torch.Tensor
    batch_size: int = 128

    @classmethod
    def of_data(cls, source: str, img_size: int, data_seed: int, calib_images: int = 256,
                val_images: int = 1000, seed: int = 0) -> "Evaluator":
        """The evaluator slimming and search use for a supernet trained on `source`: BN is
        recalibrated on `calib_images` fixed training images (drawn with `seed`), accuracy
        measured on `val_images` fixed validation images (drawn with `seed` + 1)."""
        from nas import data as data_mod

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
