"""Datasets: the embedded scikit-learn digits (no download) or an ImageFolder path.

Digits are 8x8 grey images upscaled (bilinear) to the training resolution and repeated to three
channels; the train/val split is a fixed permutation drawn from the seed (80/20).
An ImageFolder root must hold ``train/`` and ``val/`` with one folder per class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from nas.errors import UserError

DIGITS = "digits"


@dataclass
class Data:
    train: Dataset
    val: Dataset
    num_classes: int
    source: str
    in_memory: bool


def load(source: str, img_size: int, seed: int = 0) -> Data:
    if source == DIGITS:
        return _digits(img_size, seed)
    return _image_folder(Path(source), img_size)


def _digits(img_size: int, seed: int) -> Data:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).repeat(1, 3, 1, 1).contiguous()
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = len(x) // 5
    val, train = perm[:n_val], perm[n_val:]
    return Data(TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val]), 10, DIGITS, True)


def _image_folder(root: Path, img_size: int) -> Data:
    if not root.is_dir():
        raise UserError(f"--data {root}: no such directory; give an ImageFolder root with train/ and val/ "
                        f"(or omit --data for the embedded digits)")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(f"--data {root}: missing {split}/ folder; an ImageFolder root needs train/ and val/ "
                            "with one sub-folder per class")
    from timm.data import ImageDataset, create_transform

    train = ImageDataset(str(root / "train"), transform=create_transform(img_size, is_training=True))
    val = ImageDataset(str(root / "val"), transform=create_transform(img_size, is_training=False))
    if len(train) == 0 or len(val) == 0:
        raise UserError(f"--data {root}: no images found under train/ or val/")
    classes = train.reader.class_to_idx if hasattr(train.reader, "class_to_idx") else None
    num_classes = len(classes) if classes else int(max(t for _, t in train.reader.samples)) + 1
    return Data(train, val, num_classes, str(root), False)


def train_loader(data: Data, batch_size: int, seed: int, epoch: int, workers: int = 0,
                 shard: tuple[int, int] = (0, 1)) -> DataLoader:
    """The order of epoch `epoch` depends only on (seed, epoch): a resumed run replays it exactly.
    With ``shard=(rank, world)`` a data-parallel worker reads every world-th item of that order."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    rank, world = shard
    if world == 1:
        return DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=gen, drop_last=True,
                          num_workers=0 if data.in_memory else workers)
    order = torch.randperm(len(data.train), generator=gen)[rank::world].tolist()
    return DataLoader(Subset(data.train, order), batch_size=batch_size, shuffle=False, drop_last=True,
                      num_workers=0 if data.in_memory else workers)


def fixed_subset(dataset: Dataset, n: int, seed: int, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` items of a seed-fixed permutation, materialised as tensors (for BN
    recalibration and evaluation, which must see the same images every time)."""
    n = min(n, len(dataset))
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0][idx], dataset.tensors[1][idx]
    xs, ys = [], []
    for i in idx.tolist():
        x, y = dataset[i]
        xs.append(x)
        ys.append(int(y))
    return torch.stack(xs), torch.tensor(ys)
