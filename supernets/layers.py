"""Mechanics shared by all families: conv-BN folding, structural reparameterization of
parallel branches into one conv, model-level reparameterization, layer scale, and the
4D <-> token reshapes of hybrid stages."""

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models._features import feature_take_indices
from torch.nn.modules.utils import _pair
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.checkpoint import checkpoint


class ConvNorm(nn.Sequential):
    """Conv2d followed by BatchNorm2d (and an optional activation); ``reparameterize()`` folds the
    BN into the conv.

    ``fold=False`` keeps the pair in deploy form too (FastViT's ConvFFN: its reference
    reparameterization leaves that BN, and the published deploy parameter counts include it)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int | tuple[int, int] = 1, stride: int = 1,
                 padding: int | None = None, groups: int = 1, bias: bool = True, fold: bool = True,
                 act: type[nn.Module] | None = None):
        super().__init__()
        if padding is None:   # "same" for odd kernels, rectangular ones (FMViT's 3x1 / 1x3) included
            padding = tuple(k // 2 for k in _pair(kernel_size))
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_chs)
        if act is not None:
            self.act = act()
        self.fold = fold

    def reparameterize(self) -> nn.Module:
        if not self.fold:
            return self
        conv = fuse_conv_bn_eval(self.conv.eval(), self.norm.eval())
        return nn.Sequential(conv, self.act) if hasattr(self, "act") else conv


class SplitConvNorm(nn.Module):
    """A conv over the channel concatenation of several inputs, stored as one conv per input
    (summed), then BN and an optional activation.

    Same function and parameter count as one conv over ``torch.cat(inputs)``; the split exists
    so that each input's channels are a prefix of the supernet's (slicing one concatenated
    axis would hand one input's channels to the other). The deploy form is the single conv."""

    def __init__(self, in_chs: tuple[int, ...], out_chs: int, kernel_size: int = 1,
                 act: type[nn.Module] | None = None):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, out_chs, kernel_size, 1, kernel_size // 2, bias=False) for c in in_chs)
        self.norm = nn.BatchNorm2d(out_chs)
        self.act = act() if act is not None else nn.Identity()

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:   # a list: TorchScript cannot compile *inputs
        # fewer inputs than convs: the supernet's narrower split reads the leading convs
        out = inputs[0].new_zeros(())
        for i, conv in enumerate(self.convs):
            if i < len(inputs):
                out = out + conv(inputs[i])
        return self.act(self.norm(out))

    def _joint_conv(self) -> nn.Conv2d:
        k = self.convs[0].kernel_size[0]
        joint = nn.Conv2d(sum(c.in_channels for c in self.convs), self.norm.num_features, k, 1, k // 2, bias=False)
        joint.weight.data.copy_(torch.cat([c.weight for c in self.convs], 1))
        return fuse_conv_bn_eval(joint.eval(), self.norm.eval())

    def reparameterize(self) -> nn.Module:
        return CatConv(self._joint_conv(), self.act)



class PairConvNorm(SplitConvNorm):
    """``SplitConvNorm`` over exactly two inputs, with a fixed signature (TorchScript cannot
    compile ``*inputs``): MobileViT's fusion and projection convs."""

    def __init__(self, in_chs: tuple[int, int], out_chs: int, kernel_size: int = 1,
                 act: type[nn.Module] | None = None):
        super().__init__(in_chs, out_chs, kernel_size, act)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.convs[0](a) + self.convs[1](b)))

    def reparameterize(self) -> nn.Module:
        return PairCatConv(self._joint_conv(), self.act)

class CatConv(nn.Module):
    """Deploy form of ``SplitConvNorm``: concatenate, one conv, activation."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module):
        super().__init__()
        self.conv, self.act = conv, act

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.act(self.conv(torch.cat(inputs, 1)))


class PairCatConv(CatConv):
    """Deploy form of ``PairConvNorm`` (its two-input signature)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(torch.cat([a, b], 1)))


def batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` over the last two dims (equal leading dims), computed as one ``torch.bmm`` over the
    leading dims flattened. The same product; but ``@`` exports as expand + bmm, and XNNPACK leaves
    the expands to ExecuTorch's portable kernels, a copy and a partition break per product on a
    phone (experiments/executorch_delegation). Attention products go through here."""
    lead = a.shape[:-2]
    out = torch.bmm(a.reshape(-1, a.shape[-2], a.shape[-1]), b.reshape(-1, b.shape[-2], b.shape[-1]))
    return out.reshape(lead + out.shape[-2:])


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention on tokens (B, N, C) with separate q/k/v Linears.

    q, k and v are separate Linears so that a narrower attention is the leading slice of a wider
    one; they also run as three (not one over their concatenated weights: a weight computed at run
    time is no constant to XNNPACK, which then leaves the product to ExecuTorch's portable kernels,
    experiments/executorch_delegation). ``interleaved_heads`` decides what a
    narrower slice means: ``False`` (head-major, channel c in head c // head_dim) keeps the head
    dim and drops whole heads (FastViT: head dim 32, elastic width = elastic head count);
    ``True`` (channel c in head c % heads) keeps the head count and shortens every head alike
    (MobileViT: 4 heads, elastic transformer width)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, interleaved_heads: bool = False):
        super().__init__()
        self.num_heads, self.head_dim, self.interleaved = num_heads, dim // num_heads, interleaved_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.attend(tokens)

    def attend(self, tokens: torch.Tensor) -> torch.Tensor:
        """The attention itself (subclasses that reshape around it call this: TorchScript has no super())."""
        B, N, C = tokens.shape
        q, k, v = self.heads(self.q(tokens)), self.heads(self.k(tokens)), self.heads(self.v(tokens))
        attn = batched_matmul(q * self.scale, k.transpose(-2, -1)).softmax(dim=-1)
        out = batched_matmul(attn, v)                      # (B, heads, N, head_dim)
        out = out.permute(0, 2, 3, 1) if self.interleaved else out.transpose(1, 2)
        return self.proj(out.reshape(B, N, C))

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, heads, N, head_dim), channels split as ``interleaved_heads`` says."""
        B, N, _ = x.shape
        if self.interleaved:
            return x.reshape(B, N, self.head_dim, self.num_heads).permute(0, 3, 1, 2)
        return x.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)


# ---------------------------------------------------------------------------- branch folding
def branch_kernel(branch: nn.Module | None, channels: int, in_per_group: int, kernel_size: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of one parallel branch as a `kernel_size` conv of the block's shape.

    A branch is a ``ConvNorm`` (BN folded), a plain ``nn.Conv2d``, a ``BatchNorm2d`` applied to
    the input (the identity branch of MobileOne/RepVGG blocks) or ``None`` (the bare identity).
    Smaller (odd, possibly rectangular) kernels are zero-padded to the centre, which is exact
    with "same" padding and equal stride."""
    if isinstance(branch, ConvNorm):
        conv = fuse_conv_bn_eval(copy.deepcopy(branch.conv).eval(), copy.deepcopy(branch.norm).eval())
        weight, bias = conv.weight, conv.bias
    elif isinstance(branch, nn.Conv2d):
        weight = branch.weight
        bias = branch.bias if branch.bias is not None else torch.zeros(branch.out_channels)
    else:
        weight = identity_kernel(channels, in_per_group, 1)
        bias = torch.zeros(channels)
        if isinstance(branch, nn.BatchNorm2d):
            std = (branch.running_var + branch.eps).sqrt()
            weight = weight * (branch.weight / std).view(-1, 1, 1, 1)
            bias = branch.bias - branch.running_mean * branch.weight / std
        elif branch is not None:
            raise TypeError(f"cannot fold a {type(branch).__name__} branch")
    if weight.shape[1] < in_per_group:   # a branch with more groups: place it in the block's groups
        branch_groups = (branch.conv if isinstance(branch, ConvNorm) else branch).groups
        weight = expand_groups(weight, branch_groups, weight.shape[1] * branch_groups // in_per_group)
    pad_h, pad_w = (kernel_size - weight.shape[-2]) // 2, (kernel_size - weight.shape[-1]) // 2
    return F.pad(weight, [pad_w, pad_w, pad_h, pad_h]), bias


def expand_groups(weight: torch.Tensor, branch_groups: int, groups: int) -> torch.Tensor:
    """The kernel of a conv with `branch_groups` groups written as one with `groups` groups (a
    divisor): each branch group lies inside one of the coarser groups, zeros elsewhere. This is
    what lets FMViT's multi-group branches sum into one conv."""
    if branch_groups % groups:
        raise ValueError(f"a {branch_groups}-group branch does not nest in a {groups}-group conv")
    out_chs, in_b = weight.shape[:2]
    in_per_group, out_b = in_b * branch_groups // groups, out_chs // branch_groups
    dense = weight.new_zeros(out_chs, in_per_group, *weight.shape[2:])
    for g_b in range(branch_groups):
        o = g_b * out_b
        start = g_b * in_b - (o // (out_chs // groups)) * in_per_group
        dense[o:o + out_b, start:start + in_b] = weight[o:o + out_b]
    return dense


def identity_kernel(channels: int, in_per_group: int, kernel_size: int) -> torch.Tensor:
    weight = torch.zeros(channels, in_per_group, kernel_size, kernel_size)
    idx = torch.arange(channels)
    weight[idx, idx % in_per_group, kernel_size // 2, kernel_size // 2] = 1.0
    return weight


def conv_with(weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int) -> nn.Conv2d:
    """A conv holding `weight`/`bias` with "same" padding."""
    out_chs, in_per_group, k, _ = weight.shape
    conv = nn.Conv2d(in_per_group * groups, out_chs, k, stride, k // 2, groups=groups, bias=True)
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv


def fold_branches(branches: list[nn.Module | None], stride: int, groups: int) -> nn.Conv2d:
    """One conv equal to the sum of parallel branches (eval mode). Branches may have smaller
    (odd) kernels and more groups (a multiple of `groups`) than the result."""
    convs = [b for b in branches if isinstance(b, (ConvNorm, nn.Conv2d))]
    ref = convs[0].conv if isinstance(convs[0], ConvNorm) else convs[0]
    k = max(max((b.conv if isinstance(b, ConvNorm) else b).kernel_size) for b in convs)
    parts = [branch_kernel(b, ref.out_channels, ref.in_channels // groups, k) for b in branches]
    return conv_with(sum(w for w, _ in parts), sum(b for _, b in parts), stride, groups)


class MultiGroupConv(nn.Module):
    """FMViT's convolutional multi-group reparameterization (paper eq. 1): a k x k Conv-BN with G
    groups plus parallel Conv-BNs with more groups and/or smaller odd kernels, summed, then an
    optional activation; the deploy form is one k x k conv with G groups, exactly equal.

    The paper gives neither the number of branches nor their groups: ``branches`` lists
    (kernel, groups) pairs, a branch being a Conv-BN with that kernel (None: k; a (kh, kw) pair
    for the stem's edge branches) and either G x an int multiple of groups or, with
    ``GroupWidth(c)``, groups of c input channels each. A branch that does not fit (groups not
    dividing the channels, or not a multiple of G so that it cannot fold) is left out.
    ``residual`` adds the input (a shortcut folded into the kernel, as in RepVGG/MobileOne; needs
    equal channels and stride 1)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 branches: tuple[tuple[int | tuple[int, int] | None, int], ...] | None = None,
                 residual: bool = False, act: type[nn.Module] | None = None):
        super().__init__()
        if residual and (in_chs != out_chs or stride != 1):
            raise ValueError("a residual multi-group conv needs in_chs == out_chs and stride 1")
        self.stride, self.groups, self.residual = stride, groups, residual
        self.main = ConvNorm(in_chs, out_chs, kernel_size, stride, groups=groups, bias=False)
        extra = []
        for k, grouping in FMVIT_BRANCHES if branches is None else branches:
            k = _pair(kernel_size if k is None else k)
            if isinstance(grouping, GroupWidth):
                g = in_chs // grouping.channels if in_chs % grouping.channels == 0 else 0
            else:
                g = groups * grouping
            fits = (g > 0 and g % groups == 0 and all(a <= kernel_size and a % 2 for a in k)
                    and in_chs % g == 0 and out_chs % g == 0)
            # a branch equal to the main conv adds nothing, except where groups are given by width:
            # there it exists at every width (one group at the narrowest), so that prefixes hold
            same = (k, g) == ((kernel_size, kernel_size), groups) and not isinstance(grouping, GroupWidth)
            if fits and not same:
                extra.append(ConvNorm(in_chs, out_chs, k, stride, groups=g, bias=False))
        self.extra = nn.ModuleList(extra)
        self.act = act() if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x)
        for branch in self.extra:   # a loop, not sum(generator): TorchScript scripts this
            out = out + branch(x)
        return self.act(out + x if self.residual else out)

    def zero_init(self) -> None:
        """Every branch's BN scale to 0: the layer starts as its shortcut (or as 0 without one),
        as the last BN of a residual branch starts in timm's ``zero_init_last``."""
        for branch in (self.main, *self.extra):
            nn.init.zeros_(branch.norm.weight)

    def reparameterize(self) -> nn.Module:
        conv = fold_branches([self.main, *self.extra] + [None] * self.residual, self.stride, self.groups)
        return conv if isinstance(self.act, nn.Identity) else nn.Sequential(conv, self.act)


@dataclass(frozen=True)
class GroupWidth:
    """A multi-group branch's groups given by their width: `channels` input channels each."""

    channels: int


# Our reading of FMViT's unspecified branches (specs/families.md §6.5): the same kernel with
# groups of 16 and of 8 input channels, and a 1x1 with the same groups (for k > 1). Groups of a
# fixed width, not a fixed count: where a conv's output width is a fixed multiple of its input
# width (the MLPs, the attention projection, the stem's 1x1), a narrower width is then made of
# whole groups with the same inputs per output channel, so a narrow sub-network is exactly the
# prefix of the wide one's weights, which width training relies on. A fixed count (2 or 4
# groups, our first reading) moves the group boundaries with the width: the masked supernet
# computed another function than its sub-networks, and FMViT's width-trained supernet did not
# learn. Convs whose input and output widths vary independently (patch embeddings, the FMB's
# reduction) take ``UNGROUPED_BRANCHES``: no grouping keeps prefixes there.
FMVIT_BRANCHES = ((None, GroupWidth(16)), (None, GroupWidth(8)), (1, 1))
UNGROUPED_BRANCHES = ((1, 1),)


class RepCPE(nn.Module):
    """Conditional position encoding x + DWConv(x) (FastViT: 7x7 with bias) or x + BN(DWConv(x))
    (iFormer: 3x3 Conv-BN); the deploy form is one depthwise conv with the identity in its kernel."""

    def __init__(self, dim: int, kernel_size: int = 7, norm: bool = False):
        super().__init__()
        self.dim = dim
        self.pos_enc = (ConvNorm(dim, dim, kernel_size, groups=dim, bias=False) if norm
                        else nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pos_enc(x)

    def reparameterize(self) -> nn.Conv2d:
        return fold_branches([self.pos_enc, None], 1, self.dim)


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
        self.target, self.grid = to, tuple(grid)   # not `self.to`: that would shadow nn.Module.to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_tokens(x) if self.target == "tokens" else to_map(x, self.grid)


class PlainStage(nn.Module):
    """A stage that is its ``downsample`` module, then its ``blocks`` in order (iFormer's stages,
    MobileViT's MV2 stages; a family subclasses it to build its own downsample)."""

    def __init__(self, downsample: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for blk in self.blocks:
            x = blk(x)
        return x


class FamilyModel(nn.Module):
    """What every family's network shares: stem -> stages -> head, timm's ViT initialisation of
    Linears (truncated normal, std 0.02, zero bias), and timm's model interface (features,
    intermediates, classifier reset, grad checkpointing, parameter groups).

    A family calls ``super().__init__(config, in_chans)``, sets ``stem``, ``stages`` (each with its
    ``blocks``) and ``head`` (a ``PooledHead``), calls ``declare_features(channels[, reductions])``
    with each stage's output width (and total stride), then ``init_weights()``."""

    in_chans = 3
    output_fmt = "NCHW"
    __jit_unused_properties__ = ["num_features", "head_hidden_size"]   # Python-side metadata

    def __init__(self, config, in_chans: int = 3) -> None:
        super().__init__()
        self.config, self.num_classes, self.in_chans = config, config.num_classes, in_chans
        self.grad_checkpointing = False

    def init_weights(self) -> None:
        self.apply(_init_linear)

    def declare_features(self, channels: list[int], reductions: list[int] | None = None) -> None:
        """timm's ``feature_info``: one entry per stage, the maps ``features_only`` returns.
        ``reductions`` (each stage's total stride) default to a stride-4 stem and stages that each
        halve the map after the first."""
        if reductions is None:
            reductions = [4 * 2 ** j for j in range(len(channels))]
        self.feature_info = [{"num_chs": c, "reduction": r, "module": f"stages.{i}"}
                             for i, (c, r) in enumerate(zip(channels, reductions))]

    @property
    def num_features(self) -> int:
        """Channels of ``forward_features``' output."""
        return self.feature_info[-1]["num_chs"]

    @property
    def head_hidden_size(self) -> int:
        """Width of the pre-logits features (after the head's own layers, before the classifier)."""
        return self.head.hidden_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            if not torch.jit.is_scripting() and self.grad_checkpointing and self.training:
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """A stage's output as a (B, C, H, W) map (a family whose stages may end in tokens overrides it)."""
        return x

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's intermediate features: every stage's (or the ``indices``') output map, and the
        final features unless ``intermediates_only``."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r}: nas models give NCHW feature maps only")
        take, last = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages[:last + 1] if stop_early else self.stages):
            x = stage(x)
            if i in take:
                intermediates.append(self.feature_map(x))
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last one ``indices`` takes (and the classifier)."""
        take, last = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:last + 1]
        self.feature_info = self.feature_info[:last + 1]
        if prune_head:   # the head's own layers (norm, final conv) read the pruned stages' output: drop them too
            self.num_classes = 0
            self.head = LinearHead(self.num_features, 0, "").to(next(self.parameters()).device)
        return take

    def get_classifier(self) -> nn.Module | tuple[nn.Module, ...]:
        return self.head.classifiers()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        like = next(self.parameters())
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, like)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups (layer-wise LR decay): the stem, then each stage (or each block)."""
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)" if coarse else
                [(r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^stages\.(\d+)", (0,))]}

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()


def _init_linear(m: nn.Module) -> None:
    # A meta tensor holds no values (shape-only builds: width masks, profiling): drawing them only costs time
    if isinstance(m, nn.Linear) and not m.weight.is_meta:
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class PooledHead(nn.Module):
    """A classifier head with timm's interface: the family's layers before pooling
    (``pre_pool``), global average pooling (``global_pool`` 'avg'; '' keeps the map), then the
    classifier ``fc``. ``reset`` replaces the classifiers (``make_classifier``; an Identity for 0
    classes). Written for TorchScript: fixed attribute names, no ``super()`` in forward paths."""

    classifier_names: tuple[str, ...] = ("fc",)
    distillable = False   # has a distillation classifier (DistilledHead)

    def __init__(self, hidden_size: int, global_pool: str = "avg"):
        super().__init__()
        self.hidden_size = hidden_size
        self.global_pool = _checked_pool(global_pool)

    def make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.hidden_size, num_classes)

    def classifier(self, num_classes: int) -> nn.Module:
        """A classifier for ``num_classes``; for 0 an Identity (the head then gives pre-logits)."""
        return self.make_classifier(num_classes) if num_classes > 0 else nn.Identity()

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        # keepdim, then flatten: XNNPACK takes a 4D mean, not one that drops the dims
        return x.mean((2, 3), keepdim=True).flatten(1) if self.global_pool == "avg" else x

    def forward(self, x: torch.Tensor, pre_logits: bool = False):
        x = self.pool(self.pre_pool(x))
        return x if pre_logits else self.classify(x)

    def classify(self, features: torch.Tensor):
        return self.fc(features)

    def classifiers(self) -> nn.Module | tuple[nn.Module, ...]:
        found = tuple(m for m in (getattr(self, n, None) for n in self.classifier_names) if m is not None)
        return found[0] if len(found) == 1 else found

    def reset(self, num_classes: int, global_pool: str | None, like: torch.Tensor) -> None:
        """New classifiers for ``num_classes`` on ``like``'s device and dtype, in this head's mode."""
        if global_pool is not None:
            self.global_pool = _checked_pool(global_pool)
        for name in self.classifier_names:
            if getattr(self, name, None) is not None:
                new = self.classifier(num_classes)
                setattr(self, name, new.to(device=like.device, dtype=like.dtype).train(self.training))


class DistilledHead(PooledHead):
    """A head with the classifier ``head`` and an optional distillation classifier ``head_dist``
    (None when absent; DeiT-style: both outputs while ``distilled_training``, their mean
    otherwise): EfficientFormer, iFormer."""

    classifier_names = ("head", "head_dist")
    distillable = True

    def __init__(self, hidden_size: int, global_pool: str = "avg"):
        super().__init__(hidden_size, global_pool)
        self.distilled_training = False   # set by `nas train --teacher`: both outputs while training

    def classify(self, features: torch.Tensor):
        out = self.head(features)
        if self.head_dist is None:
            return out
        dist = self.head_dist(features)
        if self.training and self.distilled_training and not torch.jit.is_scripting():
            return out, dist   # (a scripted model serves inference: one tensor, as timm's distilled heads)
        return (out + dist) / 2


class LinearHead(PooledHead):
    """Global average pool, one Linear ``fc`` (FMViT's head; iFormer's in deploy form)."""

    def __init__(self, dim: int, num_classes: int, global_pool: str = "avg"):
        super().__init__(dim, global_pool)
        self.fc = self.classifier(num_classes)


def _checked_pool(global_pool: str) -> str:
    if global_pool not in ("avg", ""):
        raise ValueError(f"global_pool {global_pool!r}: nas heads pool by average ('avg') or not at all ('')")
    return global_pool


def set_drop_path(model: nn.Module, rate: float) -> nn.Module:
    """Stochastic depth as timm's models set it: the drop rate grows linearly from 0 at the first
    block to `rate` at the last; every residual branch inside a block (nested layers included)
    drops with its block's rate. Blocks declare ``self.drop_path = nn.Identity()`` and wrap their
    residual branches in it; eval mode never drops, so deploy forms are unaffected."""
    from timm.layers import DropPath

    blocks = [b for stage in model.stages for b in stage.blocks]
    for i, block in enumerate(blocks):
        p = rate * i / max(len(blocks) - 1, 1)
        for m in block.modules():
            if isinstance(getattr(m, "drop_path", None), (nn.Identity, DropPath)):
                m.drop_path = DropPath(p) if p > 0 else nn.Identity()
    return model


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
