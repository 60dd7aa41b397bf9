"""Mechanics shared by all families: conv-BN folding, model-level reparameterization,
layer scale, and the 4D <-> token reshapes of hybrid stages."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class ConvNorm(nn.Sequential):
    """Conv2d followed by BatchNorm2d; ``reparameterize()`` folds the BN into the conv."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 padding: int | None = None, groups: int = 1, bias: bool = True):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_chs)

    def reparameterize(self) -> nn.Conv2d:
        return fuse_conv_bn_eval(self.conv.eval(), self.norm.eval())


class LayerScale(nn.Module):
    """Per-channel residual scale; ``channel_dim`` is 1 for (B, C, H, W) and -1 for tokens."""

    def __init__(self, dim: int, init_value: float = 1e-5, channel_dim: int = -1):
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_dim == 1:
            return x * self.gamma.view(1, -1, 1, 1)
        return x * self.gamma


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def to_map(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], grid[0], grid[1])


class Reshape(nn.Module):
    """The one reshape between a 4D partition and a token partition (a LUT op of its own)."""

    def __init__(self, to: str, grid: tuple[int, int]):
        super().__init__()
        assert to in ("tokens", "map")
        self.to, self.grid = to, tuple(grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_tokens(x) if self.to == "tokens" else to_map(x, self.grid)


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Run a stage's blocks, reshaping once where the partition switches form.

    A block with ``token_input = True`` takes (B, N, C); all others take (B, C, H, W).
    """
    for blk in blocks:
        wants_tokens = getattr(blk, "token_input", False)
        if wants_tokens and x.ndim == 4:
            x = to_tokens(x)
        elif not wants_tokens and x.ndim == 3:
            x = to_map(x, grid)
        x = blk(x)
    return x


def reparameterize(model: nn.Module) -> nn.Module:
    """Return a deploy-form copy: every submodule with ``reparameterize()`` is replaced by the
    module it returns (outermost first, so a block may fold its own children)."""
    model = copy.deepcopy(model).eval()

    def convert(module: nn.Module) -> nn.Module:
        if hasattr(module, "reparameterize"):
            return module.reparameterize()
        for name, child in module.named_children():
            setattr(module, name, convert(child))
        return module

    with torch.no_grad():
        return convert(model)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
