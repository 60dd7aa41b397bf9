"""Supernet checkpoints: weights, α, the SearchSpace, the recipe, optimizer and RNG state.

Written atomically; loaded with ``torch.load(weights_only=True)`` (a checkpoint cannot run code).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nas.errors import UserError
from supernets import io
from supernets.config import ConfigError, SearchSpace
from supernets.supernet import Supernet

FORMAT = "nas-supernet"
VERSION = 1


def save(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    payload = {"format": FORMAT, "version": VERSION, **payload}
    return io.atomic_write(path, lambda p: torch.save(payload, p))


def load(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; train one with `nas train-supernet` or pass --supernet PATH")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise UserError(f"checkpoint {path} is corrupt or not a nas checkpoint ({type(e).__name__}); "
                        "re-run `nas train-supernet --resume` or retrain") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a nas supernet checkpoint")
    if ckpt.get("version") != VERSION:
        raise UserError(f"checkpoint {path} has version {ckpt.get('version')}, this nas reads {VERSION}")
    return ckpt


def build_supernet(ckpt: dict[str, Any]) -> Supernet:
    try:
        space = SearchSpace.from_dict(ckpt["space"])
    except ConfigError as e:
        raise UserError(f"checkpoint holds an invalid search space: {e}") from None
    net = Supernet(space, num_classes=ckpt["num_classes"], img_size=ckpt["img_size"])
    net.load_state_dict(ckpt["state_dict"])
    return net
