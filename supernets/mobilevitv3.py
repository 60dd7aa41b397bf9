"""MobileViTv3 (Wadekar & Chaurasia, 2022; specs/families.md §4): MobileNetV2 stages, then
MobileViT blocks whose transformers run over 2x2-patch-unfolded maps.

Two flavours (family knob ``flavour``):

* ``v1`` (XXS/XS/S, on MobileViTv1): transformer layers are pre-norm MHSA + SiLU MLP on tokens
  (LayerNorm, 4 heads); the head has a 1x1 expansion conv to min(4 C5, 960).
* ``v2`` (0.5/0.75/1.0, on MobileViTv2): layers are separable linear self-attention + 1x1-conv
  FFN on the (B, d, P, N) patch layout with GroupNorm(1) pre-norms; the head is pool + Linear.

The v3 changes (knob ``v3``, default true; false gives MobileViTv1/v2, which reproduces timm's
``mobilevit_*`` / ``mobilevitv2_*`` and so checks the shared blocks) are: a depthwise local
3x3 conv (v1), fusion of the *local* features with the global ones by a 1x1 conv (v1:
[local, global] -> C with SiLU; v2: [global, local] -> C, no activation, replacing the
projection), and a residual from the block input.

Layout in this code base: stage j = cvnets' layer j+1. Its first MV2 block (stride 2, or 1 in
layer1) is the stage's ``downsample``. An MV2 stage's ``blocks`` are its further MV2 blocks; a
MobileViT stage (one with a transformer width ``dim``) has exactly one MobileViT block, whose
transformer layers are the stage's ``blocks``, so transformer depth L is the number of blocks
and each layer is a supernet slot {transformer, identity}. There is nothing to reparameterize
except BN folding (train and deploy parameter counts are equal, as published).
"""

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import make_divisible, register_notrace_function
from torch import nn

from supernets.config import IDENTITY, MAX_WIDTH, ArchConfig, BlockSpec, ConfigError, SearchSpace, short
from supernets.layers import ConvNorm, FamilyModel, MultiHeadAttention, PairConvNorm, PlainStage, PooledHead
from supernets.registry import Family, OpNode, register_family

BLOCK_KINDS = ("mv2", "transformer")
FLAVOURS = ("v1", "v2")
HEADS = 4            # v1 configs: number_heads 4
PATCH = 2            # 2x2 patches: P = 4 pixel positions, N = H W / 4 patches
MAX_LAYERS = 12      # a sanity bound on transformer depth L (published: 2-4)
# transformer width; attention heads (v1); MV2 expansion of the stage's MV2 blocks (XXS and the
# v2 models: 2, XS/S: 4)
STAGE_KNOBS = {"dim": +1, "heads": +1, "mv2_expansion": +1}
MV2_EXPANSION = 4
KNOB_DEFAULTS = {"flavour": "v1", "v3": True}


def ffn_width(dim: int, flavour: str) -> int:
    """FFN hidden width: 2d (v1 configs); v2's rule floor(2d / 16) * 16."""
    return 2 * dim if flavour == "v1" else (2 * dim) // 16 * 16


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 Conv-BN-SiLU (skipped when expansion is 1), DW 3x3 Conv-BN-SiLU with
    the stride, 1x1 Conv-BN; residual when stride 1 and in == out. hidden = make_divisible(in*e, 8)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expansion: float = 4.0):
        super().__init__()
        self.drop_path = nn.Identity()   # stochastic depth: set_drop_path
        hidden = make_divisible(round(in_chs * expansion), 8)
        self.conv1_1x1 = (ConvNorm(in_chs, hidden, 1, bias=False, act=nn.SiLU)
                          if expansion != 1 else nn.Identity())
        self.conv2_kxk = ConvNorm(hidden if expansion != 1 else in_chs, hidden, 3, stride, groups=hidden,
                                  bias=False, act=nn.SiLU)
        self.conv3_1x1 = ConvNorm(hidden, out_chs, 1, bias=False)
        self.residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return x + self.drop_path(y) if self.residual else y


# ---------------------------------------------------------------------------- patches
# unfold / fold branch on the map's size (an odd side is resized): fx treats them as leaf functions
@register_notrace_function
def unfold(x: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, P, N): P = 4 pixel positions of a 2x2 patch, N patches. An odd side
    is first resized (bilinear) to the next even one, as in the reference."""
    B, C, H, W = x.shape
    h, w = -(-H // patch) * patch, -(-W // patch) * patch
    if (h, w) != (H, W):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    x = x.reshape(B, C, h // patch, patch, w // patch, patch).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(B, C, patch * patch, (h // patch) * (w // patch))


@register_notrace_function
def fold(x: torch.Tensor, size: tuple[int, int], patch: int = PATCH) -> torch.Tensor:
    """Inverse of ``unfold``: (B, C, P, N) -> (B, C, H, W) at the original `size`."""
    B, C, _, N = x.shape
    h, w = -(-size[0] // patch) * patch, -(-size[1] // patch) * patch
    x = x.reshape(B, C, patch, patch, h // patch, w // patch).permute(0, 1, 4, 2, 5, 3).reshape(B, C, h, w)
    if (h, w) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


def patches_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, d, P, N) -> (B * P, N, d): v1 attends over the N patches per pixel position."""
    B, d, P, N = x.shape
    return x.permute(0, 2, 3, 1).reshape(B * P, N, d)


def tokens_to_patches(x: torch.Tensor, batch: int) -> torch.Tensor:
    BP, N, d = x.shape
    return x.reshape(batch, BP // batch, N, d).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------- transformer layers
class TransformerLayer(nn.Module):
    """v1: LN -> MHSA (qkv bias, 4 heads) -> residual; LN -> Linear -> SiLU -> Linear -> residual,
    on tokens (B * P, N, d). Heads are interleaved so a narrower d shortens every head alike."""

    def __init__(self, dim: int, heads: int = HEADS, ffn: int | None = None):
        super().__init__()
        self.drop_path = nn.Identity()   # stochastic depth: set_drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, qkv_bias=True, interleaved_heads=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, ffn or 2 * dim)
        self.mlp.act = nn.SiLU()
        self.mlp.fc2 = nn.Linear(ffn or 2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class LinearSelfAttention(nn.Module):
    """v2's separable self-attention on (B, d, P, N): a 1-channel query softmaxed over N weights
    the keys into one context vector per pixel position; out = out_proj(ReLU(v) * context).
    q, k and v are separate 1x1 convs for prefix weight inheritance, and run as three (a weight
    concatenated at run time is no constant to XNNPACK: ``MultiHeadAttention``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.q = nn.Conv2d(dim, 1, 1)
        self.k = nn.Conv2d(dim, dim, 1)
        self.v = nn.Conv2d(dim, dim, 1)
        self.out_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        B, _, P, N = q.shape
        # softmax over N of the 3D view: ExecuTorch 1.5's XNNPACK gets a softmax over the last dim
        # of a conv's 4D output wrong (relative error ~1; experiments/executorch_delegation)
        weights = q.reshape(B, P, N).softmax(dim=-1).reshape(B, 1, P, N)
        # the sum over N as N times a 4D spatial mean, the only reduction XNNPACK takes
        C = k.shape[1]
        context = (k * weights).reshape(B, C * P, N, 1).mean((2, 3), keepdim=True).reshape(B, C, P, 1) * N
        return self.out_proj(F.relu(v) * context)


class LinearAttnLayer(nn.Module):
    """v2: GN(1) -> linear attention -> residual; GN(1) -> 1x1 -> SiLU -> 1x1 -> residual."""

    def __init__(self, dim: int, ffn: int | None = None):
        super().__init__()
        self.drop_path = nn.Identity()   # stochastic depth: set_drop_path
        ffn = ffn or ffn_width(dim, "v2")
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = LinearSelfAttention(dim)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Conv2d(dim, ffn, 1)
        self.mlp.act = nn.SiLU()
        self.mlp.fc2 = nn.Conv2d(ffn, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# ---------------------------------------------------------------------------- stages
class Stage(PlainStage):
    """``downsample`` (the stage's first MV2 block), then further MV2 ``blocks``."""

    def __init__(self, in_chs: int, width: int, blocks: list[nn.Module], *, stride: int, expansion: float,
                 downsample: bool = True):
        super().__init__(InvertedResidual(in_chs, width, stride, expansion) if downsample else nn.Identity(), blocks)


class MobileViTStage(Stage):
    """``downsample``, then one MobileViT block whose transformer layers are the ``blocks``:

    local = conv_1x1(conv_kxk(x)); global = fold(norm(layers(unfold(local))));
    v1: out = conv_fusion(local, conv_proj(global)) [+ x]; v2: out = conv_proj(global, local) [+ x].

    One class per flavour (and v2's projection per v3), so that each forward holds only its own
    calls: TorchScript compiles every branch of a forward."""

    def __init__(self, in_chs: int, width: int, blocks: list[nn.Module], *, stride: int, expansion: float,
                 dim: int, flavour: str, v3: bool, downsample: bool = True):
        super().__init__(in_chs, width, blocks, stride=stride, expansion=expansion, downsample=downsample)
        self.dim, self.v3 = dim, v3
        depthwise = v3 or flavour == "v2"   # v3 change #4 (v1); MobileViTv2 was depthwise already
        self.conv_kxk = ConvNorm(width, width, 3, groups=width if depthwise else 1, bias=False, act=nn.SiLU)
        self.conv_1x1 = nn.Conv2d(width, dim, 1, bias=False)


class MobileViTStageV1(MobileViTStage):
    def __init__(self, in_chs: int, width: int, blocks: list[nn.Module], **kwargs):
        super().__init__(in_chs, width, blocks, flavour="v1", **kwargs)
        self.norm = nn.LayerNorm(self.dim)
        self.conv_proj = ConvNorm(self.dim, width, 1, bias=False, act=nn.SiLU)
        # v3: 1x1 over [local (d), global (C)]; v1: 3x3 over [input (C), global (C)]
        self.conv_fusion = (PairConvNorm((self.dim, width), width, 1, act=nn.SiLU) if self.v3
                            else PairConvNorm((width, width), width, 3, act=nn.SiLU))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        local = self.conv_1x1(self.conv_kxk(x))
        t = patches_to_tokens(unfold(local))
        for blk in self.blocks:
            t = blk(t)
        glob = fold(tokens_to_patches(self.norm(t), x.shape[0]), (x.shape[2], x.shape[3]))
        out = self.conv_fusion(local if self.v3 else x, self.conv_proj(glob))
        return x + out if self.v3 else out


class MobileViTStageV2(MobileViTStage):
    def __init__(self, in_chs: int, width: int, blocks: list[nn.Module], **kwargs):
        super().__init__(in_chs, width, blocks, flavour="v2", **kwargs)
        self.norm = nn.GroupNorm(1, self.dim)
        self.conv_proj = ConvNorm(self.dim, width, 1, bias=False)

    def project(self, glob: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        return self.conv_proj(glob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        local = self.conv_1x1(self.conv_kxk(x))
        patches = unfold(local)
        for blk in self.blocks:
            patches = blk(patches)
        out = self.project(fold(self.norm(patches), (x.shape[2], x.shape[3])), local)
        return x + out if self.v3 else out


class MobileViTStageV2v3(MobileViTStageV2):
    """v2 with v3's changes: the projection also reads the local features."""

    def __init__(self, in_chs: int, width: int, blocks: list[nn.Module], **kwargs):
        super().__init__(in_chs, width, blocks, **kwargs)
        self.conv_proj = PairConvNorm((self.dim, self.dim), width, 1)

    def project(self, glob: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        return self.conv_proj(glob, local)


def make_stage(in_chs: int, width: int, blocks: list[nn.Module], *, stride: int, expansion: float,
               dim: int | None = None, flavour: str = "v1", v3: bool = True, downsample: bool = True) -> Stage:
    """An MV2 stage (no transformer ``dim``) or a MobileViT stage of the flavour."""
    if dim is None:
        return Stage(in_chs, width, blocks, stride=stride, expansion=expansion, downsample=downsample)
    cls = MobileViTStageV1 if flavour == "v1" else MobileViTStageV2v3 if v3 else MobileViTStageV2
    return cls(in_chs, width, blocks, stride=stride, expansion=expansion, dim=dim, v3=v3, downsample=downsample)


class Head(PooledHead):
    """v1: 1x1 Conv-BN-SiLU to min(4 C, 960), pool, dropout, Linear; v2: pool, Linear."""

    def __init__(self, dim: int, num_classes: int, flavour: str, drop_rate: float = 0.0, global_pool: str = "avg"):
        exp = min(4 * dim, 960) if flavour == "v1" else None
        super().__init__(exp or dim, global_pool)
        self.final_conv = ConvNorm(dim, exp, 1, bias=False, act=nn.SiLU) if exp else nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.fc = self.classifier(num_classes)

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(x.mean((2, 3), keepdim=True).flatten(1) if self.global_pool == "avg" else x)


class MobileViTv3(FamilyModel):
    def __init__(self, config: ArchConfig, img_size: int | None = None, make_block=None, in_chans: int = 3,
                 global_pool: str = "avg"):
        super().__init__(config, in_chans)
        make_block = make_block or _make_block
        flavour, v3 = _family_knobs(config)
        img_size = img_size or config.resolution
        self.stem = ConvNorm(in_chans, config.stem_width, 3, 2, bias=False, act=nn.SiLU)
        in_chs, stages = config.stem_width, []
        for j, st in enumerate(config.stages):
            side = img_size // 2 ** (j + 1)
            dim, expansion = st.knobs.get("dim"), _expansion(st)
            blocks = [make_block(_with_layer_knobs(spec, st, flavour, expansion), dim or st.width, (side, side))
                      for spec in st.blocks]
            stages.append(make_stage(in_chs, st.width, blocks, stride=1 if j == 0 else 2, expansion=expansion,
                                     dim=dim, flavour=flavour, v3=v3))
            in_chs = st.width
        self.stages = nn.ModuleList(stages)
        self.head = Head(in_chs, config.num_classes, flavour, float(config.head.get("drop_rate", 0.0)), global_pool)
        self.declare_features([st.width for st in config.stages], [2 ** (j + 1) for j in range(len(config.stages))])
        self.init_weights()


def _family_knobs(config: ArchConfig) -> tuple[str, bool]:
    k = {**KNOB_DEFAULTS, **config.knobs}
    return k["flavour"], bool(k["v3"])


def _expansion(stage) -> float:
    return float(stage.knobs.get("mv2_expansion", MV2_EXPANSION))


def _with_layer_knobs(spec: BlockSpec, stage, flavour: str, expansion: float) -> BlockSpec:
    """A block spec carrying what its layer needs from its stage and family (not written in YAML)."""
    return BlockSpec(spec.kind, {**spec.knobs, "flavour": flavour, "heads": stage.knobs.get("heads", HEADS),
                                 "expansion": expansion})


def _make_block(spec: BlockSpec, dim: int, grid: tuple[int, int]) -> nn.Module:
    flavour = spec.knobs.get("flavour", "v1")
    if spec.kind == "mv2":
        return InvertedResidual(dim, dim, 1, float(spec.knobs.get("expansion", 4)))
    if spec.kind == "transformer":
        if flavour == "v1":
            return TransformerLayer(dim, int(spec.knobs.get("heads", HEADS)), ffn_width(dim, flavour))
        return LinearAttnLayer(dim, ffn_width(dim, flavour))
    raise ConfigError(f"unknown mobilevitv3 block kind {spec.kind!r} (known: {', '.join(BLOCK_KINDS)})")


# ---------------------------------------------------------------------------- op graph
def op_nodes(config: ArchConfig) -> list[OpNode]:
    """stem, per stage its MV2 downsample, then its MV2 blocks or the MobileViT block as a frame
    (local convs, unfold, final norm, fold, projection/fusion, residual: the block with L = 0)
    plus one op per transformer layer, then the head."""
    flavour, v3 = _family_knobs(config)
    tag = f"{flavour}{'' if v3 else '-nov3'}"
    res, c_in = config.resolution, config.stem_width
    nodes = [OpNode("stem", f"mv-stem:3>{c_in}:{res}x{res}", "stem", (1, 3, res, res),
                    lambda c=c_in: ConvNorm(3, c, 3, 2, bias=False, act=nn.SiLU))]
    for j, st in enumerate(config.stages):
        stride = 1 if j == 0 else 2
        side = res // 2 ** (j + 1)
        prev, c, e = side * stride, st.width, _expansion(st)
        nodes.append(OpNode(f"stages.{j}.downsample", f"mv2:{c_in}>{c}:s{stride}:e{e:g}:{prev}x{prev}", "downsample",
                            (1, c_in, prev, prev), lambda a=c_in, b=c, s=stride, e=e: InvertedResidual(a, b, s, e)))
        dim = st.knobs.get("dim")
        if dim is None:
            for i, spec in enumerate(st.blocks):
                nodes.append(OpNode(f"stages.{j}.blocks.{i}", f"mv2:{c}>{c}:s1:e{e:g}:{side}x{side}", "mv2",
                                    (1, c, side, side), lambda d=c, e=e: InvertedResidual(d, d, 1, e)))
        else:
            nodes.append(OpNode(f"stages.{j}.frame", f"mvit-frame:{tag}:c{c}:d{dim}:{side}x{side}", "frame",
                                (1, c, side, side),
                                lambda d=c, t=dim, e=e: make_stage(d, d, [], stride=1, expansion=e, dim=t,
                                                                   flavour=flavour, v3=v3, downsample=False)))
            n = (-(-side // PATCH)) ** 2
            shape = (PATCH * PATCH, n, dim) if flavour == "v1" else (1, dim, PATCH * PATCH, n)
            heads = st.knobs.get("heads", HEADS)
            for i, spec in enumerate(st.blocks):
                nodes.append(OpNode(f"stages.{j}.blocks.{i}", f"transformer:{flavour}:d{dim}:h{heads}:n{n}", "transformer",
                                    shape, lambda s=_with_layer_knobs(spec, st, flavour, e), t=dim: _make_block(s, t, (1, 1))))
        c_in = c
    side = res // 32
    nodes.append(OpNode("head", f"mv-head:{flavour}:c{c_in}:{side}x{side}:k{config.num_classes}", "head",
                        (1, c_in, side, side), lambda c=c_in, k=config.num_classes: Head(c, k, flavour)))
    return nodes


# ---------------------------------------------------------------------------- validation
def _validate_knobs(knobs, where: str) -> None:
    if knobs.get("flavour", "v1") not in FLAVOURS:
        raise ConfigError(f"{where}.flavour: {knobs['flavour']!r} is not one of {', '.join(FLAVOURS)}")
    if not isinstance(knobs.get("v3", True), bool):
        raise ConfigError(f"{where}.v3: {knobs['v3']!r} is not true or false")


def _check_expansion(e, where: str) -> None:
    if isinstance(e, bool) or not isinstance(e, (int, float)) or not 1 <= e <= 16:
        raise ConfigError(f"{where}: {e!r} is not an MV2 expansion between 1 and 16")


def _validate_stage_knobs(j: int, dim, heads, flavour: str) -> None:
    where = f"stages[{j}]"
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_WIDTH:
        raise ConfigError(f"{where}.dim: {short(dim)} is not a positive integer transformer width (at most {MAX_WIDTH})")
    if isinstance(heads, bool) or not isinstance(heads, int) or not 1 <= heads <= dim:
        raise ConfigError(f"{where}.heads: {short(heads)} is not a head count in 1..dim ({dim})")
    if flavour == "v1" and dim % heads:
        raise ConfigError(f"{where}.dim: {dim} is not a multiple of the head count {heads}")


def _validate_family(knobs, stages) -> str:
    """Family-wide rules shared by configs and spaces; returns the flavour."""
    _validate_knobs(knobs, "knobs")
    if len(stages) != 5:
        raise ConfigError(f"stages: mobilevitv3 has 5 stages (layer1-layer5), got {len(stages)}")
    return knobs.get("flavour", "v1")


def validate(config: ArchConfig) -> None:
    flavour = _validate_family(config.knobs, config.stages)
    for j, st in enumerate(config.stages):
        _check_expansion(st.knobs.get("mv2_expansion", MV2_EXPANSION), f"stages[{j}].mv2_expansion")
        dim = st.knobs.get("dim")
        if dim is None and "heads" in st.knobs:
            raise ConfigError(f"stages[{j}].heads: only a MobileViT stage (one with `dim`) has attention heads")
        if dim is not None:
            _validate_stage_knobs(j, dim, st.knobs.get("heads", HEADS), flavour)
            if len(st.blocks) > MAX_LAYERS:
                raise ConfigError(f"stages[{j}].blocks: {len(st.blocks)} transformer layers is out of range "
                                  f"0..{MAX_LAYERS}")
        want = "transformer" if dim is not None else "mv2"
        for i, b in enumerate(st.blocks):
            if b.kind != want:
                why = ("a MobileViT stage (one with `dim`) holds transformer layers" if dim is not None
                       else "a stage without `dim` holds MV2 blocks; give it `dim` for a MobileViT block")
                raise ConfigError(f"stages[{j}].blocks[{i}]: {b.kind!r} is not allowed here: {why}")


def validate_space(space: SearchSpace) -> None:
    flavour = _validate_family(space.knobs, space.stages)
    for j, st in enumerate(space.stages):
        for e in st.knobs.get("mv2_expansion", ()):
            _check_expansion(e, f"stages[{j}].mv2_expansion")
        dims = st.knobs.get("dim")
        want = "transformer" if dims else "mv2"
        for c in st.choices:
            if c not in (want, IDENTITY):
                raise ConfigError(f"stages[{j}].choices: {c!r} is not allowed here (this stage takes {want}, identity)")
        for dim in dims or ():
            for heads in st.knobs.get("heads", (HEADS,)):
                _validate_stage_knobs(j, dim, heads, flavour)
        if dims and st.slots > MAX_LAYERS:
            raise ConfigError(f"stages[{j}].slots: {st.slots} transformer layers is out of range 1..{MAX_LAYERS}")


def stem_width(widths: Sequence[int]) -> int:
    """MobileViTv2's rule make_divisible(clamp(32 w, 16, 64), 8) written on layer1's width
    (64 w): it also gives v1's 16 for every published v1 model."""
    return make_divisible(min(max(widths[0] / 2, 16), 64), 8)


# ---------------------------------------------------------------------------- timm interop
def convert_timm_state_dict(state_dict: dict[str, torch.Tensor], heads: int = HEADS) -> dict[str, torch.Tensor]:
    """Map a timm ``mobilevit_*`` / ``mobilevitv2_*`` state dict onto this module with ``v3: false``."""
    out = {}
    for key, value in state_dict.items():
        k = re.sub(r"\.bn\.", ".norm.", key)
        k = re.sub(r"^final_conv\.", "head.final_conv.", k)
        m = re.match(r"^stages\.(\d+)\.(\d+)\.(.*)$", k)
        if m:
            j, i, rest = int(m[1]), int(m[2]), m[3]
            if i == 0:
                k = f"stages.{j}.downsample.{rest}"
            elif rest.startswith(("conv_kxk", "conv_1x1", "norm", "conv_proj", "conv_fusion", "transformer")):
                k = f"stages.{j}.{re.sub(r'^transformer', 'blocks', rest)}"
            else:
                k = f"stages.{j}.blocks.{i - 1}.{rest}"
        if re.search(r"conv_fusion\.conv\.weight$", k):       # v1 fusion conv over [input, global]
            for n, part in enumerate(value.chunk(2, dim=1)):
                out[k.replace("conv.weight", f"convs.{n}.weight")] = part
            continue
        if re.search(r"attn\.qkv\.(weight|bias)$", k):         # v1: fused head-major -> q/k/v interleaved
            dim = value.shape[0] // 3
            hd = dim // heads
            order = torch.tensor([(r % heads) * hd + r // heads for r in range(dim)])
            for n, part in zip("qkv", value.chunk(3)):
                out[k.replace("qkv.", f"{n}.")] = part[order]
            continue
        if re.search(r"attn\.qkv_proj\.(weight|bias)$", k):    # v2: [q (1), k (d), v (d)]
            dim = (value.shape[0] - 1) // 2
            for n, part in zip("qkv", value.split([1, dim, dim])):
                out[k.replace("qkv_proj.", f"{n}.")] = part
            continue
        if re.search(r"attn\.proj\.weight$", k):               # v1 proj reads the interleaved heads
            dim = value.shape[1]
            hd = dim // heads
            value = value[:, torch.tensor([(r % heads) * hd + r // heads for r in range(dim)])]
        out[k] = value
    return out


# ---------------------------------------------------------------------------- family
# config `head:` options: name -> (type, low, high)
HEAD_OPTIONS = {"drop_rate": (float, 0.0, 1.0)}
VARIANTS = ("xxs", "xs", "s", "xxs_l2", "xs_l2", "s_l2", "050", "075", "100")


FAMILY = register_family(Family(
    name="mobilevitv3", build=MobileViTv3, block_kinds=BLOCK_KINDS, make_block=_make_block, op_nodes=op_nodes,
    validate=validate, validate_space=validate_space,
    stage_knobs=STAGE_KNOBS, knob_defaults=KNOB_DEFAULTS, head_options=HEAD_OPTIONS, variants=VARIANTS,
    stem_width=stem_width,
    timm_cfg={"first_conv": "stem.conv", "classifier": ("head.fc",)},
    # The fusion conv reads the stage's channels next to the transformer's, and the next stage's
    # MV2 expands them: an importance permutation would have to follow both, so subnets take
    # natural (leading) channels, as in FastViT.
    channel_reorder=False,
))
