"""iFormer (Zheng, 2025; specs/families.md §5): ConvNeXt-like BN conv stages, then single-head
modulation attention (SHMA) in the late stages, all on 4D maps (no reshape between kinds).

Block kinds:

* ``conv``: x + γ·[DW 7x7 Conv-BN, 1x1 Conv-BN C -> ratio·C, GELU, 1x1 Conv-BN -> C];
* ``shma``: the logical attention block, the code's three units RepCPE (x + BN(DW3x3(x))) ->
  x + γ·SHMA(x) -> x + γ·FFN2d(x). SHMA: q, k = Conv-BN C -> C/R; v, gate = sigmoid(Conv-BN
  C -> C) each; one head: O = v·softmax(qᵀk / sqrt(C/R))ᵀ; out = Conv-BN(O ⊙ gate).

The q/k reduction R is a stage knob ``r`` (published: 2 in stage 3, 4 in stage 4, 1 for H), so
a search space can make it elastic. The reference's fused v/gate conv (C -> 2C) is two convs
here: same parameters, and a narrower SHMA is then the leading slice of a wider one.

Deploy form: every Conv-BN folds, RepCPE's identity goes into its kernel, the BN_Linear head
(BatchNorm1d + Linear, optional distillation head) fuses into one Linear; layer scale (H only)
stays, as in the reference.
"""

import torch
from torch import nn

from supernets.config import ArchConfig, BlockSpec, ConfigError, SearchSpace
from supernets.layers import (ConvNorm, DistilledHead, FamilyModel, LayerScale, LinearHead, PlainStage, RepCPE,
                              batched_matmul)
from supernets.registry import Family, OpNode, register_family

BLOCK_KINDS = ("conv", "shma")
CONV_RATIO, FFN_RATIO, REDUCTION = 4, 3, 2
# q/k reduction (a larger R is cheaper) and the expansion ratios of the stage's conv blocks and
# SHMA FFNs (iFormer-T: 3 and 2; the others 4 and 3)
STAGE_KNOBS = {"r": -1, "conv_ratio": +1, "ffn_ratio": +1}


def _scale(dim: int, ls_init: float) -> nn.Module:
    return LayerScale(dim, ls_init, channel_dim=1) if ls_init > 0 else nn.Identity()


class ConvBlock(nn.Module):
    def __init__(self, dim: int, ratio: float = CONV_RATIO, ls_init: float = 0.0):
        super().__init__()
        self.drop_path = nn.Identity()   # stochastic depth: set_drop_path
        hidden = int(dim * ratio)
        self.dw = ConvNorm(dim, dim, 7, groups=dim, bias=False)
        self.pw1 = ConvNorm(dim, hidden, 1, bias=False, act=nn.GELU)
        self.pw2 = ConvNorm(hidden, dim, 1, bias=False)
        self.layer_scale = _scale(dim, ls_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.layer_scale(self.pw2(self.pw1(self.dw(x)))))


class SHMA(nn.Module):
    """Single-head modulation attention on (B, C, H, W); see the module docstring."""

    def __init__(self, dim: int, reduction: int = REDUCTION):
        super().__init__()
        qk = dim // reduction
        self.scale = qk ** -0.5
        self.q = ConvNorm(dim, qk, 1, bias=False)
        self.k = ConvNorm(dim, qk, 1, bias=False)
        self.v = ConvNorm(dim, dim, 1, bias=False)
        self.gate = ConvNorm(dim, dim, 1, bias=False)
        self.proj = ConvNorm(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k = self.q(x).flatten(2), self.k(x).flatten(2)                 # (B, C/R, N)
        v, gate = self.v(x).sigmoid().flatten(2), self.gate(x).sigmoid()  # v is sigmoid-activated too
        attn = batched_matmul(q.transpose(1, 2) * self.scale, k).softmax(dim=-1)   # (B, N, N) over keys
        out = batched_matmul(v, attn.transpose(1, 2)).reshape(B, C, H, W)
        return self.proj(out * gate)


class FFN2d(nn.Module):
    def __init__(self, dim: int, ratio: float = FFN_RATIO):
        super().__init__()
        self.fc1 = ConvNorm(dim, int(dim * ratio), 1, bias=False, act=nn.GELU)
        self.fc2 = ConvNorm(int(dim * ratio), dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class SHMABlock(nn.Module):
    """The ``shma`` kind: RepCPE -> x + γ·SHMA(x) -> x + γ·FFN2d(x)."""

    def __init__(self, dim: int, ratio: float = FFN_RATIO, reduction: int = REDUCTION, ls_init: float = 0.0):
        super().__init__()
        self.drop_path = nn.Identity()   # stochastic depth: set_drop_path
        self.cpe = RepCPE(dim, 3, norm=True)
        self.attn = SHMA(dim, reduction)
        self.ls1 = _scale(dim, ls_init)
        self.ffn = FFN2d(dim, ratio)
        self.ls2 = _scale(dim, ls_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe(x)
        x = x + self.drop_path(self.ls1(self.attn(x)))
        return x + self.drop_path(self.ls2(self.ffn(x)))


class Stem(nn.Sequential):
    """Stride 4: Conv-BN 5x5/2 3 -> C/2, GELU; FusedIB without residual: Conv-BN 5x5/2
    C/2 -> 2C, GELU, Conv-BN 1x1 2C -> C."""

    def __init__(self, out_chs: int, in_chs: int = 3):
        super().__init__(ConvNorm(in_chs, out_chs // 2, 5, 2, bias=False, act=nn.GELU),
                         ConvNorm(out_chs // 2, 2 * out_chs, 5, 2, bias=False, act=nn.GELU),
                         ConvNorm(2 * out_chs, out_chs, 1, bias=False))


class Stage(PlainStage):
    def __init__(self, in_chs: int, dim: int, blocks: list[nn.Module], downsample: bool):
        super().__init__(ConvNorm(in_chs, dim, 3, 2, bias=False) if downsample else nn.Identity(), blocks)


class BNLinear(nn.Sequential):
    """BatchNorm1d + Linear; ``reparameterize()`` folds the BN into the Linear."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)
        self.fc = nn.Linear(dim, out)

    def reparameterize(self) -> nn.Linear:
        scale = self.norm.weight / (self.norm.running_var + self.norm.eps).sqrt()
        shift = self.norm.bias - self.norm.running_mean * scale
        fused = nn.Linear(self.fc.in_features, self.fc.out_features)
        fused.weight.data.copy_(self.fc.weight * scale)
        fused.bias.data.copy_(self.fc.bias + self.fc.weight @ shift)
        return fused


class Head(DistilledHead):
    """Global average pool, BN_Linear (+ a distillation BN_Linear, averaged); deploy: one Linear."""

    def __init__(self, dim: int, num_classes: int, distillation: bool = False, global_pool: str = "avg"):
        super().__init__(dim, global_pool)
        self.head = self.classifier(num_classes)
        self.head_dist = self.classifier(num_classes) if distillation else None

    def make_classifier(self, num_classes: int) -> nn.Module:
        return BNLinear(self.hidden_size, num_classes)

    def reparameterize(self) -> nn.Module:
        deployed = LinearHead(self.hidden_size, 0, self.global_pool)
        if isinstance(self.head, BNLinear):
            deployed.fc = self.head.reparameterize()
            if self.head_dist is not None:
                other = self.head_dist.reparameterize()
                deployed.fc.weight.data.add_(other.weight).mul_(0.5)
                deployed.fc.bias.data.add_(other.bias).mul_(0.5)
        return deployed


class IFormer(FamilyModel):
    def __init__(self, config: ArchConfig, img_size: int | None = None, make_block=None, in_chans: int = 3,
                 global_pool: str = "avg"):
        super().__init__(config, in_chans)
        make_block = make_block or _make_block
        self.stem = Stem(config.stem_width, in_chans)
        in_chs, stages = config.stem_width, []
        for j, st in enumerate(config.stages):
            blocks = [make_block(_with_stage_knobs(spec, st, config), st.width, (0, 0)) for spec in st.blocks]
            stages.append(Stage(in_chs, st.width, blocks, downsample=j > 0))
            in_chs = st.width
        self.stages = nn.ModuleList(stages)
        self.head = Head(in_chs, config.num_classes, bool(config.head.get("distillation", False)), global_pool)
        self.declare_features([st.width for st in config.stages])
        self.init_weights()


def _with_stage_knobs(spec: BlockSpec, stage, config: ArchConfig) -> BlockSpec:
    """What a block needs from its stage and config (reduction R, expansion ratio, layer scale),
    not written per block; a block's own ratio wins."""
    # both ratios travel: a supernet slot's spec builds a conv and an SHMA candidate from it
    return BlockSpec(spec.kind, {"conv_ratio": stage.knobs.get("conv_ratio", CONV_RATIO),
                                 "ffn_ratio": stage.knobs.get("ffn_ratio", FFN_RATIO), **spec.knobs,
                                 "r": stage.knobs.get("r", REDUCTION),
                                 "ls_init": float(config.head.get("layer_scale_init", 0.0))})


def _ratio(spec: BlockSpec) -> float:
    """The block's expansion ratio: its own, else its stage's for its kind."""
    if spec.kind == "conv":
        return spec.knobs.get("ratio", spec.knobs.get("conv_ratio", CONV_RATIO))
    return spec.knobs.get("ratio", spec.knobs.get("ffn_ratio", FFN_RATIO))


def _make_block(spec: BlockSpec, dim: int, grid: tuple[int, int]) -> nn.Module:
    ls_init = float(spec.knobs.get("ls_init", 0.0))
    if spec.kind == "conv":
        return ConvBlock(dim, _ratio(spec), ls_init)
    if spec.kind == "shma":
        return SHMABlock(dim, _ratio(spec), int(spec.knobs.get("r", REDUCTION)), ls_init)
    raise ConfigError(f"unknown iformer block kind {spec.kind!r} (known: {', '.join(BLOCK_KINDS)})")


# ---------------------------------------------------------------------------- op graph
def op_nodes(config: ArchConfig) -> list[OpNode]:
    res, c_in = config.resolution, config.stem_width
    dist = int(bool(config.head.get("distillation", False)))
    nodes = [OpNode("stem", f"if-stem:3>{c_in}:{res}x{res}", "stem", (1, 3, res, res), lambda c=c_in: Stem(c))]
    for j, st in enumerate(config.stages):
        side, c = res // (4 * 2 ** j), st.width
        if j > 0:
            prev = side * 2
            nodes.append(OpNode(f"stages.{j}.downsample", f"if-down:{c_in}>{c}:{prev}x{prev}", "downsample",
                                (1, c_in, prev, prev), lambda a=c_in, b=c: ConvNorm(a, b, 3, 2, bias=False)))
        for i, spec in enumerate(st.blocks):
            full = _with_stage_knobs(spec, st, config)
            # the key names the ratio only when it is not the kind's default, so a value written
            # or implied is one op
            ratio = _ratio(full)
            knobs = {"r": full.knobs["r"]} if spec.kind == "shma" else {}
            if full.knobs["ls_init"] > 0:
                knobs["ls_init"] = full.knobs["ls_init"]
            if ratio != (CONV_RATIO if spec.kind == "conv" else FFN_RATIO):
                knobs["ratio"] = ratio
            tag = "".join(f":{k}{v:g}" for k, v in sorted(knobs.items()))
            nodes.append(OpNode(f"stages.{j}.blocks.{i}", f"{spec.kind}:c{c}:{side}x{side}{tag}", spec.kind,
                                (1, c, side, side), lambda s=full, d=c: _make_block(s, d, (0, 0))))
        c_in = c
    side = res // 32
    nodes.append(OpNode("head", f"if-head:c{c_in}:{side}x{side}:k{config.num_classes}:d{dist}", "head",
                        (1, c_in, side, side), lambda c=c_in, k=config.num_classes, d=bool(dist): Head(c, k, d)))
    return nodes


# ---------------------------------------------------------------------------- validation
def _check_r(r, where: str, width: int | None) -> None:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"{where}: {r!r} is not a positive integer reduction ratio")
    if width is not None and width % r:
        raise ConfigError(f"{where}: {width} channels do not divide by the q/k reduction {r}")


def _check_ratio(ratio, where: str) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 16:
        raise ConfigError(f"{where}: {ratio!r} is not an expansion ratio in (0, 16]")


def validate(config: ArchConfig) -> None:
    for j, st in enumerate(config.stages):
        if "r" in st.knobs:
            _check_r(st.knobs["r"], f"stages[{j}].r", st.width)
        for name in ("conv_ratio", "ffn_ratio"):
            if name in st.knobs:
                _check_ratio(st.knobs[name], f"stages[{j}].{name}")
        for i, b in enumerate(st.blocks):
            if "ratio" in b.knobs:
                _check_ratio(b.knobs["ratio"], f"stages[{j}].blocks[{i}].ratio")


def validate_space(space: SearchSpace) -> None:
    for j, st in enumerate(space.stages):
        for name in ("conv_ratio", "ffn_ratio"):
            for ratio in st.knobs.get(name, ()):
                _check_ratio(ratio, f"stages[{j}].{name}")
        for r in st.knobs.get("r", ()):
            _check_r(r, f"stages[{j}].r", None)
            for w in space.widths(j):
                _check_r(r, f"stages[{j}].r", w)


# ---------------------------------------------------------------------------- family
# config `head:` options: name -> (type, low, high)
HEAD_OPTIONS = {"distillation": (bool, None, None), "layer_scale_init": (float, 0.0, 1.0)}
VARIANTS = ("t", "s", "m", "l", "l2", "h")


FAMILY = register_family(Family(
    name="iformer", build=IFormer, block_kinds=BLOCK_KINDS, make_block=_make_block, op_nodes=op_nodes,
    validate=validate, validate_space=validate_space,
    block_knobs=("ratio",), stage_knobs=STAGE_KNOBS, head_options=HEAD_OPTIONS, variants=VARIANTS,
    timm_cfg={"first_conv": "stem.0.conv", "classifier": ("head.head.fc", "head.head_dist.fc")},
))
