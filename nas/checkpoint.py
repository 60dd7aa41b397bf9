"""Checkpoints, written atomically and loaded with ``torch.load(weights_only=True)`` (a
checkpoint cannot run code):

* a supernet (``nas-supernet``): weights, α, the SearchSpace, the recipe, optimizer and RNG state;
* a model (``nas-model``): one concrete ArchConfig with its weights (train form), the resolution
  it was trained at, and, while ``nas train`` runs, EMA weights, optimizer and RNG state. ``nas
  slim`` and ``nas search`` write one next to each emitted config (the inherited weights, BN
  recalibrated); ``nas train`` writes ``model.pt``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nas.errors import UserError
from nas.core import io
from supernets.config import ArchConfig, ConfigError, SearchSpace
from supernets.supernet import Supernet

FORMAT = "nas-supernet"
MODEL_FORMAT = "nas-model"
VERSION = 1
REQUIRED = {FORMAT: ("space", "num_classes", "img_size", "recipe", "state_dict"),
            MODEL_FORMAT: ("config", "img_size", "state_dict")}


def save(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    payload = {"format": FORMAT, "version": VERSION, **payload}   # a model payload brings its own format
    return io.atomic_write(path, lambda p: torch.save(payload, p))


def load(path: str | os.PathLike, formats: tuple[str, ...] = (FORMAT,)) -> dict[str, Any]:
    """A checkpoint of one of `formats` (default: a supernet)."""
    path = Path(path)
    what = " or ".join({FORMAT: "supernet", MODEL_FORMAT: "model"}[f] for f in formats)
    if not path.is_file():
        how = "train one with `nas train-supernet` or pass --supernet PATH" if FORMAT in formats else \
            "train one with `nas train` (or emit one with `nas slim`)"
        raise UserError(f"{what} checkpoint {path} not found; {how}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise UserError(f"checkpoint {path} is corrupt or not a nas checkpoint ({type(e).__name__}); "
                        "re-run the command that wrote it (with --resume where it has one)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in formats:
        raise UserError(f"{path} is not a nas {what} checkpoint")
    if ckpt.get("version") != VERSION:
        raise UserError(f"checkpoint {path} has version {ckpt.get('version')}, this nas reads {VERSION}")
    lacking = [k for k in REQUIRED[ckpt["format"]] if k not in ckpt]
    if lacking:
        raise UserError(f"checkpoint {path} lacks {', '.join(lacking)}; it was not written by nas (or was edited): "
                        "re-run the command that writes it")
    return ckpt


def load_state_dict_file(path: str | os.PathLike, flag: str) -> dict[str, torch.Tensor]:
    """A plain weights file given by a user (`flag` names the option): ``torch.save(state_dict)``,
    or a dict holding one under ``state_dict`` / ``model``, or a nas model checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types (UnpicklingError, zip errors) for a bad file
        raise UserError(f"{flag} {path}: cannot load a state dict ({type(e).__name__}); pass a file written by "
                        "torch.save(model.state_dict())") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{flag} {path}: holds no state dict (a mapping of names to tensors); pass a file written "
                        "by torch.save(model.state_dict())")
    return state


def save_model(path: str | os.PathLike, config: ArchConfig, model: torch.nn.Module, img_size: int,
               **extra: Any) -> Path:
    """A model checkpoint: the config (meta included), its weights and the resolution they were trained at."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save(path, {"format": MODEL_FORMAT, "config": config.to_dict(), "img_size": img_size,
                       "state_dict": state, **extra})


def model_config(ckpt: dict[str, Any], path: str | os.PathLike) -> ArchConfig:
    try:
        return ArchConfig.from_dict(ckpt["config"])
    except ConfigError as e:
        raise UserError(f"{path} holds an invalid config: {e}") from None


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model` exactly, or say which tensor does not fit (one line). Tables a
    family resamples on load (EfficientFormer's attention biases at another resolution) fit."""
    target = model.state_dict()
    for name in target:
        if name not in state:
            raise UserError(f"{source}: has no tensor {name} that the config needs; the weights belong to another "
                            "architecture")
    extra = sorted(set(state) - set(target))
    if extra:
        raise UserError(f"{source}: tensor {extra[0]} has no place in the config ({len(extra)} such); the weights "
                        "belong to another architecture")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines() if "size mismatch for" in line), str(e))
        name = first.split("size mismatch for ", 1)[-1].split(":", 1)[0]
        shapes = f"{tuple(state[name].shape)}, the config needs {tuple(target[name].shape)}" if name in state else first
        raise UserError(f"{source}: {name} is {shapes}") from None


def rng_state() -> dict[str, Any]:
    """Every random stream a training run draws from (torch CPU and CUDA, numpy for timm's mixup,
    Python's for augmentations), in types ``torch.load(weights_only=True)`` accepts."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, python_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "gauss": float(gauss)},
            "python": {"version": version, "state": list(state), "gauss": python_gauss}}


def set_rng_state(saved: Any) -> None:
    """Restore what ``rng_state`` saved (a bare tensor: a checkpoint of the torch CPU stream only)."""
    import random

    import numpy as np

    if isinstance(saved, torch.Tensor):
        torch.set_rng_state(saved)
        return
    torch.set_rng_state(saved["torch"])
    if saved["cuda"] and torch.cuda.is_available() and len(saved["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(saved["cuda"])
    n = saved["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = saved["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))


def build_supernet(ckpt: dict[str, Any]) -> Supernet:
    try:
        space = SearchSpace.from_dict(ckpt["space"])
    except ConfigError as e:
        raise UserError(f"checkpoint holds an invalid search space: {e}") from None
    net = Supernet(space, num_classes=ckpt["num_classes"], img_size=ckpt["img_size"],
                   train_widths=any(k.startswith("width_choices.") for k in ckpt["state_dict"]))
    load_weights(net, ckpt["state_dict"], "supernet checkpoint (its space and weights disagree)")
    return net
