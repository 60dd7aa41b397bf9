"""Data sources: digits, Fashion-MNIST (IDX files), batched upscaling of grey images."""
import gzip
import struct

import pytest
import torch

from nas import data as data_mod
from nas.errors import UserError


def _write_idx(path, array: torch.Tensor) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.to(torch.uint8).numpy().tobytes())


@pytest.fixture
def idx_folder(tmp_path):
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 40), ("t10k", 12)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), generator=g))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", torch.arange(n) % 10)
    return tmp_path


def test_fashion_mnist_reads_idx_files_and_upscales_per_batch(idx_folder):
    data = data_mod.load(f"fashion-mnist:{idx_folder}", 64)
    assert (len(data.train), len(data.val), data.num_classes) == (40, 12, 10)
    x, y = data.train.__getitems__([0, 5])
    assert x.shape == (2, 3, 64, 64) and y.tolist() == [0, 5]
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    single, label = data.train[5]
    assert torch.equal(single, x[1]) and int(label) == 5
    batch = next(iter(data_mod.train_loader(data, 8, seed=0, epoch=0)))
    assert batch[0].shape == (8, 3, 64, 64)


def test_a_truncated_idx_file_is_one_clear_error(idx_folder):
    raw = gzip.open(idx_folder / "t10k-images-idx3-ubyte.gz").read()
    with gzip.open(idx_folder / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:-10])
    with pytest.raises(UserError, match="truncated"):
        data_mod.load(f"fashion-mnist:{idx_folder}", 32)


def test_missing_fashion_mnist_names_the_install_command(tmp_path):
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        data_mod.load(f"fashion-mnist:{tmp_path}", 32)


@pytest.mark.skipif(not data_mod.FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debians_fashion_mnist_package():
    data = data_mod.load("fashion-mnist", 32)
    assert (len(data.train), len(data.val)) == (60_000, 10_000)
    counts = torch.bincount(data.val.labels, minlength=10)
    assert counts.tolist() == [1000] * 10   # the official test split is balanced


def test_digits_split_is_fixed_by_the_seed():
    a, b = data_mod.load("digits", 32, seed=0), data_mod.load("digits", 32, seed=0)
    assert torch.equal(a.val.__getitems__(list(range(10)))[0], b.val.__getitems__(list(range(10)))[0])
    assert (len(a.train), len(a.val)) == (1438, 359)


_LOAD_IN_WORKERS = """
import sys
from nas import data as data_mod
data = data_mod.load(sys.argv[1], 32, augment=("rand-m9-mstd0.5-inc1", 0.25))
assert (len(data.train), len(data.val), data.num_classes, data.in_memory) == (36, 12, 3, False)
loader = data_mod.train_loader(data, 8, seed=0, epoch=0, workers=2)
assert loader.num_workers == 2 and loader.persistent_workers
x, y = next(iter(loader))
assert x.shape == (8, 3, 32, 32) and y.max() < 3
print(" ".join(type(t).__name__ for t in data.train.transform.transforms))
"""


def test_image_folder_with_randaugment_and_erasing_loads_in_worker_processes(digit_folder):
    # In a fresh interpreter, as `nas train` runs: forked from the suite's own process (which by then
    # has attached to Ray and loaded every backend), a DataLoader worker died of a segfault in 2 of 3
    # full runs, never alone
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _LOAD_IN_WORKERS, str(digit_folder)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RandAugment" in done.stdout and "RandomErasing" in done.stdout


def test_randaugments_posterize_to_zero_bits_is_a_black_image_not_a_crash(digit_folder):
    """timm's "inc" RandAugment keeps 0 bits at magnitude 10 (rand-m9-mstd0.5 reaches it for ~1 image
    in 40), which Pillow 13 refuses: every epoch of an image folder crashed in a data worker."""
    from PIL import Image

    data = data_mod.load(str(digit_folder), 32, augment=("rand-m10-n1-inc1", 0.0))
    rand_augment = next(t for t in data.train.transform.transforms if type(t).__name__ == "RandAugment")
    op = next(op for op in rand_augment.ops if op.name == "PosterizeIncreasing")
    op.prob, op.magnitude_std = 1.0, 0.0
    img = Image.new("RGB", (8, 8), (200, 100, 50))
    assert op.level_fn(10, op.hparams) == (0,)                # the bits it asks for
    assert op(img).getextrema() == ((0, 0),) * 3             # black, as Pillow < 13 made it
    assert op.__class__("PosterizeIncreasing", 1.0, 5)(img).getpixel((0, 0)) != (0, 0, 0)   # timm's own, unchanged


def test_image_folder_traps_are_one_clear_error(digit_folder, tmp_path):
    import shutil

    shutil.rmtree(digit_folder / "val" / "class2")
    with pytest.raises(UserError, match="class folder 'class2' is only in train/"):
        data_mod.load(str(digit_folder), 32)
    (digit_folder / "val" / "class2").mkdir()
    with pytest.raises(UserError, match="class2 holds no images"):   # would shift every later label
        data_mod.load(str(digit_folder), 32)
    shutil.copytree(digit_folder / "val" / "class1", digit_folder / "val" / "class2", dirs_exist_ok=True)
    data = data_mod.load(str(digit_folder), 32)
    with pytest.raises(UserError, match="only 36 images, so an epoch would take no step"):
        data_mod.train_loader(data, 64, seed=0, epoch=0)


def test_an_image_folder_without_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(UserError, match="train/ has no class folders"):
        data_mod.load(str(tmp_path), 32)


def test_sources_are_checked_and_made_absolute_before_a_run_starts(idx_folder, monkeypatch):
    """Ray workers and resumes run from other directories: a relative folder must not reach them."""
    monkeypatch.chdir(idx_folder.parent)
    assert data_mod.checked_source(f"fashion-mnist:{idx_folder.name}") == f"fashion-mnist:{idx_folder}"
    assert data_mod.checked_source(idx_folder.name) == str(idx_folder)
    assert data_mod.checked_source("digits") == "digits" and data_mod.checked_source("fashion-mnist") == "fashion-mnist"
    with pytest.raises(UserError, match="fashion-mnist:none: no such directory"):
        data_mod.checked_source("fashion-mnist:none")
    with pytest.raises(UserError, match="--data none: no such directory"):
        data_mod.checked_source("none")


def test_an_image_folder_of_undecodable_files_is_one_error_not_a_mid_epoch_crash(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(5):
                (tmp_path / split / cls / f"{i}.jpg").write_bytes(b"not a jpeg" * (i + 1))
    with pytest.raises(UserError, match=r"10 of 10 sampled train/ images do not decode \(e.g. .*a/0.jpg"):
        data_mod.load(str(tmp_path), 32)
