"""FastViT (Vasu et al., 2023; specs/families.md §3): RepMixer and attention stages with
MobileOne-style structural reparameterization.

Train form -> deploy form (``supernets.layers.reparameterize``):

* ``MobileOneBlock`` (stem, patch-embed 1x1, head conv): k x k Conv-BN + 1x1 Conv-BN (k > 1) +
  BN identity (in == out, stride 1) -> one conv; then SE (head only) and the activation.
* ``ReparamLargeKernelConv`` (patch embedding): 7x7 Conv-BN + 3x3 Conv-BN -> one 7x7 conv.
* ``RepMixer``: x + gamma * (mixer(x) - BN(x)) -> one depthwise 3x3 conv (identity, layer scale
  and both BNs inside its kernel).
* ``RepCPE``: x + DWConv7x7(x) -> one depthwise 7x7 conv.
* ConvFFN's depthwise 7x7 Conv-BN stays as it is, like the reference reparameterization (the
  published deploy parameter counts include that BN).

Module and parameter names follow timm's ``fastvit.py`` where the structure allows, so a timm
state dict maps with ``convert_timm_state_dict`` (BN ``bn`` -> ``norm``, layer-scale shapes).
"""

import re

import torch
from torch import nn

from supernets.config import ArchConfig, BlockSpec, ConfigError, SearchSpace
from supernets.layers import (
    ConvNorm,
    FamilyModel,
    LayerScale,
    MultiHeadAttention,
    PooledHead,
    RepCPE,
    branch_kernel,
    conv_with,
    fold_branches,
    identity_kernel,
    to_map,
    to_tokens,
)
from supernets.registry import Family, OpNode, register_family

BLOCK_KINDS = ("repmixer", "attention")
MLP_RATIO = 3
# MLP expansion per stage (T8/T12: 3, the others 4): elastic in a space; a larger ratio costs more.
STAGE_KNOBS = {"mlp_ratio": +1}
HEAD_DIM = 32


class SqueezeExcite(nn.Module):
    """avg-pool -> 1x1 (C -> C/16) -> ReLU -> 1x1 -> sigmoid -> scale (the head conv's SE)."""

    def __init__(self, chs: int, rd_ratio: float = 0.0625):
        super().__init__()
        rd = int(chs * rd_ratio)
        self.fc1 = nn.Conv2d(chs, rd, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd, chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class MobileOneBlock(nn.Module):
    """Sum of parallel branches (k x k Conv-BN, 1x1 Conv-BN scale if k > 1, BN identity if
    in == out and stride 1), then SE, then the activation."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 use_se: bool = False, act: bool = True):
        super().__init__()
        self.stride, self.groups = stride, groups
        self.identity = nn.BatchNorm2d(out_chs) if in_chs == out_chs and stride == 1 else None
        self.conv_kxk = nn.ModuleList([ConvNorm(in_chs, out_chs, kernel_size, stride, groups=groups, bias=False)])
        self.conv_scale = (ConvNorm(in_chs, out_chs, 1, stride, groups=groups, bias=False)
                           if kernel_size > 1 else None)
        self.se = SqueezeExcite(out_chs) if use_se else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()

    def branches(self) -> list[nn.Module]:
        return [*self.conv_kxk, *([self.conv_scale] if self.conv_scale is not None else []),
                *([self.identity] if self.identity is not None else [])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.identity(x) if self.identity is not None else None
        if self.conv_scale is not None:
            out = self.conv_scale(x) if out is None else out + self.conv_scale(x)
        for conv in self.conv_kxk:   # a loop and Optional, not sum(branches()): TorchScript scripts this
            out = conv(x) if out is None else out + conv(x)
        assert out is not None
        return self.act(self.se(out))

    def reparameterize(self) -> nn.Module:
        return nn.Sequential(fold_branches(self.branches(), self.stride, self.groups), self.se, self.act)


class ReparamLargeKernelConv(nn.Module):
    """7x7 Conv-BN + 3x3 Conv-BN (same stride and groups), no activation."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 7, small_kernel: int = 3, stride: int = 2):
        super().__init__()
        self.stride, self.groups = stride, in_chs
        self.large_conv = ConvNorm(in_chs, out_chs, kernel_size, stride, groups=in_chs, bias=False)
        self.small_conv = ConvNorm(in_chs, out_chs, small_kernel, stride, groups=in_chs, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.large_conv(x) + self.small_conv(x)

    def reparameterize(self) -> nn.Conv2d:
        return fold_branches([self.large_conv, self.small_conv], self.stride, self.groups)


class PatchEmbed(nn.Module):
    """Stride-2 downsampling between stages: a large-kernel conv where output channel o reads
    input channel (o // 2) mod in_chs, then a 1x1 MobileOneBlock with GELU.

    Published variants double the width (out = 2 * in): that is exactly timm's grouped conv
    (groups = in). For elastic widths the same rule reads a prefix of the input channels
    (out < 2 * in) or wraps around them (out > 2 * in), so any pair of widths is valid and a
    narrower embedding is the leading slice of a wider one (supernet weight inheritance)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        if out_chs % 2:
            raise ConfigError(f"fastvit patch embedding needs an even output width, got {out_chs}")
        self.in_chs, self.reads = in_chs, out_chs // 2
        # fixed at build (fx traces no shape-dependent branches): how often the input is tiled to
        # reach the channels read, and whether a prefix of them is taken
        self.tiles = -(-self.reads // in_chs)
        self.sliced = self.reads != self.tiles * in_chs
        self.proj = nn.Sequential(ReparamLargeKernelConv(self.reads, out_chs), MobileOneBlock(out_chs, out_chs, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tiles > 1:
            x = x.repeat(1, self.tiles, 1, 1)
        if self.sliced:
            x = x[:, :self.reads]
        return self.proj(x)


class RepMixer(nn.Module):
    """x + gamma * (mixer(x) - norm(x)); mixer = DW 3x3 MobileOneBlock without activation."""

    def __init__(self, dim: int, kernel_size: int = 3, ls_init: float = 1e-5):
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.norm = nn.BatchNorm2d(dim)
        self.mixer = MobileOneBlock(dim, dim, kernel_size, groups=dim, act=False)
        self.layer_scale = LayerScale(dim, ls_init, channel_dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    def reparameterize(self) -> nn.Conv2d:
        k, gamma = self.kernel_size, self.layer_scale.gamma.view(-1, 1, 1, 1)
        mix = [branch_kernel(b, self.dim, 1, k) for b in self.mixer.branches()]
        w_mix, b_mix = sum(w for w, _ in mix), sum(b for _, b in mix)
        w_norm, b_norm = branch_kernel(self.norm, self.dim, 1, k)
        weight = identity_kernel(self.dim, 1, k) + gamma * (w_mix - w_norm)
        return conv_with(weight, gamma.flatten() * (b_mix - b_norm), 1, self.dim)


class ConvMlp(nn.Module):
    """ConvFFN: DW 7x7 Conv-BN (kept in deploy form), 1x1 -> GELU -> 1x1."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.conv = ConvNorm(dim, dim, 7, groups=dim, bias=False, fold=False)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class Attention(MultiHeadAttention):
    """Plain MHSA over the flattened map: head dim 32, no qkv bias, no position bias. q, k and v
    are split (``convert_timm_state_dict`` splits timm's fused ``qkv``) so that a narrower
    attention, with fewer heads, is the leading slice of a wider one."""

    def __init__(self, dim: int, head_dim: int = HEAD_DIM):
        super().__init__(dim, dim // head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_map(self.attend(to_tokens(x)), (x.shape[2], x.shape[3]))


class RepMixerBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = MLP_RATIO, ls_init: float = 1e-5):
        super().__init__()
        self.drop_path = nn.Identity()   # stochastic depth: set_drop_path
        self.token_mixer = RepMixer(dim, ls_init=ls_init)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale = LayerScale(dim, ls_init, channel_dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.drop_path(self.layer_scale(self.mlp(x)))


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = MLP_RATIO, ls_init: float = 1e-5):
        super().__init__()
        self.drop_path = nn.Identity()   # stochastic depth: set_drop_path
        self.norm = nn.BatchNorm2d(dim)
        self.token_mixer = Attention(dim)
        self.layer_scale_1 = LayerScale(dim, ls_init, channel_dim=1)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_2 = LayerScale(dim, ls_init, channel_dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1(self.token_mixer(self.norm(x))))
        return x + self.drop_path(self.layer_scale_2(self.mlp(x)))


class Stem(nn.Sequential):
    """Stride 4: 3x3/2 conv, 3x3/2 depthwise, 1x1; each a MobileOneBlock with GELU."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(MobileOneBlock(in_chs, out_chs, 3, stride=2),
                         MobileOneBlock(out_chs, out_chs, 3, stride=2, groups=out_chs),
                         MobileOneBlock(out_chs, out_chs, 1))


class Stage(nn.Module):
    """PatchEmbed (not in stage 1), RepCPE when the stage has attention blocks, the blocks."""

    def __init__(self, in_chs: int, dim: int, blocks: list[nn.Module], downsample: bool, cpe: bool):
        super().__init__()
        self.downsample = PatchEmbed(in_chs, dim) if downsample else nn.Identity()
        self.pos_emb = RepCPE(dim) if cpe else nn.Identity()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_emb(self.downsample(x))
        for blk in self.blocks:
            x = blk(x)
        return x


class Head(PooledHead):
    """MobileOne 3x3 conv C -> 2C (groups C) with SE and GELU, global average pool, Linear."""

    def __init__(self, dim: int, num_classes: int, global_pool: str = "avg"):
        super().__init__(2 * dim, global_pool)
        self.final_conv = MobileOneBlock(dim, 2 * dim, 3, groups=dim, use_se=True)
        self.fc = self.classifier(num_classes)

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(x)


class FastViT(FamilyModel):
    def __init__(self, config: ArchConfig, img_size: int | None = None, make_block=None, in_chans: int = 3,
                 global_pool: str = "avg"):
        super().__init__(config, in_chans)
        make_block = make_block or _make_block
        ls_init = _ls_init(config)
        self.stem = Stem(in_chans, config.stem_width)
        in_chs, stages = config.stem_width, []
        img_size = img_size or config.resolution
        for j, st in enumerate(config.stages):
            side = img_size // (4 * 2 ** j)
            blocks = [make_block(_with_stage_knobs(spec, st, ls_init), st.width, (side, side)) for spec in st.blocks]
            stages.append(Stage(in_chs, st.width, blocks, downsample=j > 0, cpe=_has_cpe(config, j)))
            in_chs = st.width
        self.stages = nn.ModuleList(stages)
        self.head = Head(in_chs, config.num_classes, global_pool)
        self.declare_features([st.width for st in config.stages])
        self.init_weights()


def _ls_init(config: ArchConfig) -> float:
    return float(config.head.get("layer_scale_init", 1e-5))


def _with_stage_knobs(spec: BlockSpec, stage, ls_init: float) -> BlockSpec:
    """What a block takes from its stage (MLP ratio) and the config (layer-scale init) unless it
    sets them itself."""
    return BlockSpec(spec.kind, {"mlp_ratio": stage.knobs.get("mlp_ratio", MLP_RATIO), "ls_init": ls_init, **spec.knobs})


def _has_cpe(config: ArchConfig, j: int) -> bool:
    """The published rule: a RepCPE opens every stage that holds attention blocks (in a supernet,
    every stage whose slots can choose attention, so that subnets inherit it)."""
    return any(b.kind == "attention" or "attention" in b.knobs.get("choices", ()) for b in config.stages[j].blocks)


def _make_block(spec: BlockSpec, dim: int, grid: tuple[int, int]) -> nn.Module:
    mlp_ratio = float(spec.knobs.get("mlp_ratio", MLP_RATIO))
    ls_init = float(spec.knobs.get("ls_init", 1e-5))
    if spec.kind == "repmixer":
        return RepMixerBlock(dim, mlp_ratio, ls_init)
    if spec.kind == "attention":
        return AttentionBlock(dim, mlp_ratio, ls_init)
    raise ConfigError(f"unknown fastvit block kind {spec.kind!r} (known: {', '.join(BLOCK_KINDS)})")


# ---------------------------------------------------------------------------- op graph
def op_nodes(config: ArchConfig) -> list[OpNode]:
    res, c_in = config.resolution, config.stem_width
    nodes = [OpNode("stem", f"fv-stem:3>{c_in}:{res}x{res}", "stem", (1, 3, res, res), lambda c=c_in: Stem(3, c))]
    for j, st in enumerate(config.stages):
        side, c = res // (4 * 2 ** j), st.width
        if j > 0:
            prev = side * 2
            nodes.append(OpNode(f"stages.{j}.downsample", f"fv-embed:{c_in}>{c}:{prev}x{prev}", "embed",
                                (1, c_in, prev, prev), lambda a=c_in, b=c: PatchEmbed(a, b)))
        if _has_cpe(config, j):
            nodes.append(OpNode(f"stages.{j}.pos_emb", f"fv-cpe:c{c}:{side}x{side}", "cpe", (1, c, side, side),
                                lambda d=c: RepCPE(d)))
        for i, spec in enumerate(st.blocks):
            full = _with_stage_knobs(spec, st, 1e-5)
            # the default ratio is left out of the key, so a ratio written or implied is one op
            ratio = float(full.knobs["mlp_ratio"])
            tag = f":mlp_ratio{ratio:g}" if ratio != MLP_RATIO else ""
            nodes.append(OpNode(f"stages.{j}.blocks.{i}", f"{spec.kind}:c{c}:{side}x{side}{tag}", spec.kind,
                                (1, c, side, side), lambda s=full, d=c, g=(side, side): _make_block(s, d, g)))
        c_in = c
    side = res // 32
    nodes.append(OpNode("head", f"fv-head:c{c_in}:{side}x{side}:k{config.num_classes}", "head",
                        (1, c_in, side, side), lambda c=c_in, k=config.num_classes: Head(c, k)))
    return nodes


# ---------------------------------------------------------------------------- validation
def validate(config: ArchConfig) -> None:
    if config.stem_width != config.stages[0].width:
        raise ConfigError(f"stem.width: {config.stem_width} must equal stages[0].width ({config.stages[0].width}): "
                          "FastViT's first stage has no patch embedding")
    for j, st in enumerate(config.stages):
        if j > 0 and st.width % 2:
            raise ConfigError(f"stages[{j}].width: {st.width} must be even (the patch embedding makes two "
                              "output channels per input channel)")
        for i, b in enumerate(st.blocks):
            _check_ratio(b.knobs.get("mlp_ratio", MLP_RATIO), f"stages[{j}].blocks[{i}].mlp_ratio")
            if b.kind == "attention" and st.width % HEAD_DIM:
                raise ConfigError(f"stages[{j}].width: {st.width} is not a multiple of the head dim {HEAD_DIM} "
                                  "(attention blocks need whole heads)")
        _check_ratio(st.knobs.get("mlp_ratio", MLP_RATIO), f"stages[{j}].mlp_ratio")


def _check_ratio(ratio, where: str) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 1 <= ratio <= 16:
        raise ConfigError(f"{where}: {ratio!r} is not an MLP ratio between 1 and 16")


def validate_space(space: SearchSpace) -> None:
    for j, st in enumerate(space.stages):
        for ratio in st.knobs.get("mlp_ratio", ()):
            _check_ratio(ratio, f"stages[{j}].mlp_ratio")


# ---------------------------------------------------------------------------- timm interop
def convert_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ``fastvit_*`` state dict to this module's names."""
    renames = [
        (r"\.bn\.", ".norm."),
        (r"token_mixer\.norm\.identity\.", "token_mixer.norm."),
        (r"^final_conv\.", "head.final_conv."),
        (r"^head\.fc\.", "head.fc."),
    ]
    out = {}
    for key, value in state_dict.items():
        k = key
        for pat, rep in renames:
            k = re.sub(pat, rep, k)
        if re.search(r"(layer_scale(_[12])?)\.gamma$", k):
            value = value.flatten()
        if k.endswith("token_mixer.qkv.weight"):
            for name, part in zip("qkv", value.chunk(3)):
                out[k.replace("qkv.weight", f"{name}.weight")] = part
            continue
        out[k] = value
    return out


# ---------------------------------------------------------------------------- family
# config `head:` options: name -> (type, low, high)
HEAD_OPTIONS = {"layer_scale_init": (float, 0.0, 1.0)}
VARIANTS = ("t8", "t12", "s12", "sa12", "sa24", "sa36", "ma36")


FAMILY = register_family(Family(
    name="fastvit", build=FastViT, block_kinds=BLOCK_KINDS, make_block=_make_block, op_nodes=op_nodes,
    validate=validate, validate_space=validate_space,
    block_knobs=("mlp_ratio",), stage_knobs=STAGE_KNOBS, head_options=HEAD_OPTIONS, variants=VARIANTS,
    timm_cfg={"first_conv": "stem.0.conv_kxk.0.conv", "classifier": ("head.fc",)},
    # The patch embedding ties output channel o to input channel o // 2, which couples the channel
    # orders of adjacent stages: an importance permutation per stage would not preserve the
    # function, so subnets take natural (leading) channels.
    channel_reorder=False,
))
