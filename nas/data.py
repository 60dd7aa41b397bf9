"""Datasets: the embedded scikit-learn digits (no download), Fashion-MNIST from Debian's
``dataset-fashion-mnist`` package, or an ImageFolder path.

* ``digits``: 1,797 8x8 grey images; the train/val split is a fixed permutation drawn from the
  seed (80/20).
* ``fashion-mnist`` (or ``fashion-mnist:DIR``): 60,000 + 10,000 28x28 grey images read from the
  IDX files; the official test split is the validation set.
* anything else: an ImageFolder root holding ``train/`` and ``val/`` with one folder per class
  (timm's ``create_transform``: RandAugment and random erasing when training).

Grey images stay in memory at their native size and are upscaled (bilinear) to the training
resolution and repeated to three channels a batch at a time (``__getitems__``): Fashion-MNIST at
224 px would otherwise take 36 GB.
"""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from nas.errors import UserError

DIGITS = "digits"
FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_INSTALL = "sudo apt-get install dataset-fashion-mnist"


@dataclass
class Data:
    train: Dataset
    val: Dataset
    num_classes: int
    source: str
    in_memory: bool   # tensors in this process: loaders need no worker processes


class GreyImages(Dataset):
    """Grey images at native size (N, H, W; uint8 or float in [0, 1]) served as normalised
    3-channel images of side `img_size`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, img_size: int, scale: float = 255.0):
        self.images, self.labels, self.img_size, self.scale = images, labels, img_size, scale

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        x = self.images[idx].unsqueeze(1).float() / self.scale
        if x.shape[-1] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous(), self.labels[idx]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


def _batch(items):
    """Collate for a GreyImages batch (already stacked by ``__getitems__``) or a list of samples."""
    if isinstance(items, tuple):
        return items
    return torch.utils.data.default_collate(items)


def in_memory_source(source: str) -> bool:
    """The small grey sets held in memory (digits, Fashion-MNIST), as opposed to an image folder."""
    return source == DIGITS or source == FASHION_MNIST or source.startswith(FASHION_MNIST + ":")


def default_img_size(source: str, deploy_resolution) -> int:
    """64 px for the small grey in-memory sets (digits, Fashion-MNIST); an image folder trains at
    the deploy resolution its latency is priced at (`deploy_resolution()`, called only then)."""
    return 64 if in_memory_source(source) else deploy_resolution()


def _no_image_folder(source) -> str:
    return (f"--data {source}: no such directory; give an ImageFolder root with train/ and val/, "
            f"'{FASHION_MNIST}', or omit --data for the embedded digits")


def checked_source(source: str) -> str:
    """`source` with any folder made absolute (Ray workers and resumes run from other working
    directories), after the cheap checks that its folder exists: one line before a run starts,
    not a worker's traceback after it did."""
    if source == DIGITS:
        return source
    if in_memory_source(source):
        if ":" not in source:
            return source
        folder = Path(source.split(":", 1)[1]).expanduser().resolve()
        if not folder.is_dir():
            raise UserError(f"--data {source}: no such directory; pass --data fashion-mnist:DIR with the IDX files, "
                            f"or install Debian's package with `{FASHION_MNIST_INSTALL}` and use --data fashion-mnist")
        return f"{FASHION_MNIST}:{folder}"
    root = Path(source).expanduser().resolve()
    if not root.is_dir():
        raise UserError(_no_image_folder(source))
    return str(root)


def load(source: str, img_size: int, seed: int = 0, augment: tuple[str | None, float] = (None, 0.0)) -> Data:
    """`augment` = (timm auto-augment policy, random-erasing probability) for image folders; the
    grey in-memory sets are small centred images that these policies were not made for."""
    if source == DIGITS:
        return _digits(img_size, seed)
    if in_memory_source(source):
        folder = Path(source.split(":", 1)[1]) if ":" in source else FASHION_MNIST_DIR
        return _fashion_mnist(folder, img_size)
    return _image_folder(Path(source), img_size, *augment)


def _digits(img_size: int, seed: int) -> Data:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = len(x) // 5
    val, train = perm[:n_val], perm[n_val:]
    return Data(GreyImages(x[train], y[train], img_size, 16.0), GreyImages(x[val], y[val], img_size, 16.0),
                10, DIGITS, True)


def _read_idx(path: Path) -> torch.Tensor:
    """An IDX file (gzipped or not) of unsigned bytes as a uint8 tensor of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        body = raw[4 + 4 * ndim:]
        if len(body) != int(torch.tensor(shape).prod()):
            raise ValueError("truncated")
    except (OSError, ValueError, struct.error) as e:
        raise UserError(f"{path}: unreadable IDX file ({e}); reinstall with `{FASHION_MNIST_INSTALL}`") from None
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def _fashion_mnist(folder: Path, img_size: int) -> Data:
    def find(stem: str) -> Path:
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
        raise UserError(f"--data fashion-mnist: {folder / stem}[.gz] not found; install Debian's package with "
                        f"`{FASHION_MNIST_INSTALL}` or pass --data fashion-mnist:DIR with the IDX files")

    splits = []
    for prefix in ("train", "t10k"):
        images, labels = _read_idx(find(f"{prefix}-images-idx3-ubyte")), _read_idx(find(f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or len(images) != len(labels):
            raise UserError(f"{folder}: {prefix} images {tuple(images.shape)} and labels {tuple(labels.shape)} "
                            "do not match")
        splits.append(GreyImages(images, labels.long(), img_size))
    return Data(splits[0], splits[1], 10, FASHION_MNIST, True)


def _posterize(img, bits_to_keep: int, **kwargs):
    """timm's posterize, but for 0 bits kept: a black image, as Pillow made it before 13, which
    refuses 0 bits. timm's "inc" RandAugment (``rand-m9-mstd0.5-inc1``) keeps 4 - int(0.4 * M)
    bits, 0 at magnitude 10, which M=9's spread (mstd0.5) reaches for one image in ~40: training
    crashed in a data worker partway through an epoch."""
    from PIL import Image
    from timm.data import auto_augment

    return Image.new(img.mode, img.size) if bits_to_keep <= 0 else auto_augment.posterize(img, bits_to_keep, **kwargs)


def _posterize_safe(transform):
    """`transform` with the posterize of its auto-augment ops (RandAugment's, AutoAugment's,
    AugMix's) replaced by `_posterize`."""
    from timm.data import auto_augment

    for t in getattr(transform, "transforms", ()):
        ops = list(getattr(t, "ops", ())) + [op for sub in getattr(t, "policy", ()) for op in sub]
        for op in ops:
            if getattr(op, "aug_fn", None) is auto_augment.posterize:
                op.aug_fn = _posterize
    return transform


def _image_folder(root: Path, img_size: int, auto_augment: str | None = None, re_prob: float = 0.0) -> Data:
    if not root.is_dir():
        raise UserError(_no_image_folder(root))
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(f"--data {root}: missing {split}/ folder; an ImageFolder root needs train/ and val/ "
                            "with one sub-folder per class")
    from timm.data import ImageDataset, create_transform
    from timm.data.readers.img_extensions import get_img_extensions

    # timm names classes after the folders that hold images: an empty class folder or a class
    # missing from one split would shift the label indices of the other silently.
    classes = {split: sorted(d.name for d in (root / split).iterdir() if d.is_dir()) for split in ("train", "val")}
    if not classes["train"]:
        raise UserError(f"--data {root}: train/ has no class folders; an ImageFolder root needs train/<class>/ and "
                        "val/<class>/ folders of images")
    if classes["train"] != classes["val"]:
        only = sorted(set(classes["train"]) ^ set(classes["val"]))
        where = "train/" if only[0] in classes["train"] else "val/"
        raise UserError(f"--data {root}: class folder {only[0]!r} is only in {where} ({len(only)} such); train/ and "
                        "val/ need the same class folders")
    extensions = get_img_extensions(as_set=True)
    for split in ("train", "val"):
        for name in classes[split]:
            folder = root / split / name
            if not any(f.suffix.lower() in extensions for f in folder.rglob("*") if f.is_file()):
                raise UserError(f"--data {root}: {folder} holds no images; every class needs images in train/ and "
                                "val/ (or remove the folder from both)")
    train = ImageDataset(str(root / "train"), transform=_posterize_safe(create_transform(
        img_size, is_training=True, auto_augment=auto_augment or None, re_prob=re_prob)))
    val = ImageDataset(str(root / "val"), transform=create_transform(img_size, is_training=False))
    if len(train) == 0 or len(val) == 0:
        raise UserError(f"--data {root}: no images found under train/ or val/")
    for split, dataset in (("train", train), ("val", val)):
        _check_images_decode(root, split, [Path(f) for f, _ in dataset.reader.samples])
    classes = train.reader.class_to_idx if hasattr(train.reader, "class_to_idx") else None
    num_classes = len(classes) if classes else int(max(t for _, t in train.reader.samples)) + 1
    return Data(train, val, num_classes, str(root), False)


def _check_images_decode(root: Path, split: str, files: list[Path], probes: int = 16) -> None:
    """Decode `probes` files spread over the split. timm skips an undecodable image (and logs it),
    so a few bad files cost a few samples; but a split where most probes fail would end, mid-epoch,
    in timm's "Failed to load 10 consecutive samples": say so now, naming a file."""
    from PIL import Image, UnidentifiedImageError

    picked = files[:: max(1, len(files) // probes)][:probes]
    bad = []
    for f in picked:
        try:
            with Image.open(f) as im:
                im.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as e:
            bad.append((f, type(e).__name__))
    if picked and len(bad) * 2 > len(picked):
        f, why = bad[0]
        raise UserError(f"--data {root}: {len(bad)} of {len(picked)} sampled {split}/ images do not decode "
                        f"(e.g. {f}: {why}); re-copy or remove the damaged files")


def loader(data: Data, dataset: Dataset, batch_size: int, *, workers: int = 0, shuffle_generator=None,
           drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over `dataset`: in-memory data is read in this process a batch at a time;
    file-backed data decodes in `workers` persistent processes (pinned memory for a GPU)."""
    workers = 0 if data.in_memory else workers
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle_generator is not None,
                      generator=shuffle_generator, drop_last=drop_last, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=pin_memory and not data.in_memory,
                      collate_fn=_batch)


def train_loader(data: Data, batch_size: int, seed: int, epoch: int, workers: int = 0,
                 shard: tuple[int, int] = (0, 1), pin_memory: bool = False) -> DataLoader:
    """The order of epoch `epoch` depends only on (seed, epoch): a resumed run replays it exactly.
    With ``shard=(rank, world)`` a data-parallel worker reads every world-th item of that order."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    rank, world = shard
    if len(data.train) // world < batch_size:
        raise UserError(f"--batch-size {batch_size * world}: the training set has only {len(data.train)} images, so "
                        "an epoch would take no step; use a smaller --batch-size")
    if world == 1:
        return loader(data, data.train, batch_size, workers=workers, shuffle_generator=gen, drop_last=True,
                      pin_memory=pin_memory)
    order = torch.randperm(len(data.train), generator=gen)[rank::world].tolist()
    return loader(data, Subset(data.train, order), batch_size, workers=workers, drop_last=True, pin_memory=pin_memory)


def fixed_subset(dataset: Dataset, n: int, seed: int, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` items of a seed-fixed permutation, materialised as tensors (for BN
    recalibration and evaluation, which must see the same images every time)."""
    n = min(n, len(dataset))
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    if hasattr(dataset, "__getitems__"):
        return dataset.__getitems__(idx)
    xs, ys = [], []
    for i in idx:
        x, y = dataset[i]
        xs.append(x)
        ys.append(int(y))
    return torch.stack(xs), torch.tensor(ys)
