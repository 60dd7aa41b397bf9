"""FMViT (Tan et al., 2023; specs/families.md §6): CNN-Transformer hybrid whose stages end in a
multi-frequency fusion block (FMB) mixing several high-frequency (conv) bands with one
low-frequency (attention) band. BN + ReLU throughout. There is no public code: this module is
built from the paper, and the readings below are ours.

Blocks:

* every conv that the paper reparameterizes is a ``MultiGroupConv`` (layers.py): the conv plus
  parallel Conv-BNs with groups of 16 and of 8 input channels and, for k > 1, a 1x1 (our N and
  Gi, §6.5), one conv at deploy. Groups have a fixed width, not a fixed count, so that narrower
  widths are whole groups (width training); the patch embeddings and the FMB's reduction, whose
  input and output widths vary independently, have no grouped branches;
* ``GMLP`` (ratio 2): 1x1 multi-group -> ReLU -> DW 3x3 (+1x1 branch) with its shortcut folded
  in -> ReLU -> 1x1 multi-group;
* ``CFB`` (block kind ``cfb``): x + DW3x3(x) as a token mixer (3x3 and 1x1 DW branches and the
  identity, one DW conv at deploy, as FastViT's RepMixer/RepCPE), then x + GMLP(x);
* ``RLMHSA``: one projection W (a multi-group 1x1 Conv-BN) shared by keys and values, queries
  are the raw input: softmax(X (XW)ᵀ / sqrt(d)) XW per head, head dim 32 (heads = width / 32,
  fewer when that does not divide); no output projection (the FMB fusion conv follows);
* ``FMB`` (the stage-level block of stages 2-4): z0 = ReLU(Conv-BN 1x1 x -> FM width),
  z_i = CFB_i(z_{i-1}) for i = 1..n high-frequency branches (n = 0..3), z_low = RLMHSA(z_n);
  y = BN(Conv1x1(concat(x, z_low, z_1..z_n))) -> out width (the paper's "patch embedding
  fusion"); out = y + GMLP(y). The concat order puts the branches last so that a subnet with
  fewer branches inherits the leading fusion weights;
* stem: Conv 3x3/2 (+3x1 and 1x3 edge branches) -> DW 3x3/2 (+1x1) -> Conv 1x1 (multi-group),
  each BN + ReLU; patch embedding: AvgPool 2x2/2 (stages 2-4) + multi-group Conv-BN 1x1,
  nothing when neither channels nor resolution change; head: global pool + Linear.

Initialisation (the paper gives none): the last BN of every residual branch (the CFB's token
mixer branches, the GMLP's output conv in CFB and FMB) starts at scale 0, so every block starts
as the identity (timm's ``zero_init_last``; Goyal et al. 2017). FMViT has no layer scale, so
without it the residual stream's scale grows with every CFB and a supernet that samples depth
(hard MetaPaths, sharp width samples) sees a different scale at every step: on digits it did not
learn (train top-1 12.9% -> 15.7% in 2 epochs with hard slots, against 88.8% at fixed depth);
with it, hard slots learn as fast as a fixed network.

Reading of the garbled paper Table 1 (specs/families.md §6.2). Each "Channels (a, b, c)" of a
stage is (patch-embedding width, CFB width, FMB output width); a equals the previous stage's c
in every column, so the patch embedding here converts straight to b (one 1x1 conv instead of
the table's c -> a "fusion" then a -> b). The four readable columns are the chains
32->64->80 / 80->128->160 / 160->192->320 (T), 48->96->160 / ->192->320 / ->384->640 (S),
96->128->160 / ->320->480 / ->512->960 and 96->256->320 / ->384->480 / ->640->1280; the
widest chain is L, the other one M, and B (the lost column) is interpolated between them. FM
widths 64/128/192/256 are T/S/M/L; B takes 224. Stage 1 CFB counts 3/3/3/6 are read as T/S/M/L
(B: 4); the CFB counts of stages 2-4, which the table lost, are chosen so that the deploy-form
parameters and FLOPs land within ±10% / ±15% of the paper's Table 2 (checked in the tests).

Searchable (stage knobs): ``hf_branches`` (0-3, α-searched: the supernet samples the split
with Gumbel-softmax next to the MetaPaths, see ``ElasticFMB``), ``fm_width`` and
``out_width``; slimming steps them down ("one fewer high-frequency branch", "FM width -16").
"""

import torch
from torch import nn
import torch.nn.functional as F

from supernets.config import MAX_WIDTH, ArchConfig, BlockSpec, ConfigError, SearchSpace
from supernets.layers import UNGROUPED_BRANCHES, FamilyModel, LinearHead, MultiGroupConv, SplitConvNorm, batched_matmul
from supernets.metapath import KnobChoice
from supernets.registry import Family, OpNode, register_family

BLOCK_KINDS = ("cfb",)
MLP_RATIO, HEAD_DIM, MAX_HF_BRANCHES = 2, 32, 3
STAGE_KNOBS = {"hf_branches": +1, "fm_width": +1, "out_width": +1}
DW_BRANCHES = ((1, 1),)                                 # standard DW reparameterization: + a 1x1
EDGE_BRANCHES = (((3, 1), 1), ((1, 3), 1))             # stem: vertical / horizontal edge kernels


def _dw(dim: int, stride: int = 1, residual: bool = False, act: type[nn.Module] | None = None) -> MultiGroupConv:
    return MultiGroupConv(dim, dim, 3, stride, groups=dim, branches=DW_BRANCHES, residual=residual, act=act)


class GMLP(nn.Module):
    def __init__(self, dim: int, ratio: float = MLP_RATIO):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = MultiGroupConv(dim, hidden, 1, act=nn.ReLU)
        self.dw = _dw(hidden, residual=True, act=nn.ReLU)
        self.fc2 = MultiGroupConv(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dw(self.fc1(x)))

    def zero_init_last(self) -> None:
        self.fc2.zero_init()


class CFB(nn.Module):
    """Convolutional fusion block: x + DW(x) (folded into the DW kernel), then x + GMLP(x)."""

    def __init__(self, dim: int, ratio: float = MLP_RATIO):
        super().__init__()
        self.drop_path = nn.Identity()   # stochastic depth: set_drop_path
        self.mixer = _dw(dim, residual=True)
        self.mlp = GMLP(dim, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mixer(x)
        return x + self.drop_path(self.mlp(x))

    def zero_init_last(self) -> None:
        self.mixer.zero_init()   # x + DW(x) starts as x
        self.mlp.zero_init_last()


def num_heads(dim: int) -> int:
    """dim / 32 heads, or the largest head count below that divides dim (a width of 48 has 1)."""
    return next(h for h in range(max(1, dim // HEAD_DIM), 0, -1) if dim % h == 0)


def reduction_ratio(stage: int) -> int:
    """NextViT's E-MHSA key/value reduction by stage (8, 4, 2, 1 at strides 4..32)."""
    return 2 ** max(0, 3 - stage)


class RaggedAvgPool2d(nn.Module):
    """Average pooling by `size`, with ``ceil_mode`` (a last, partial window) only where the grid
    is not a multiple of `size`: on a multiple both are the same, and XNNPACK takes the pool without
    ``ceil_mode`` but leaves it to ExecuTorch's portable kernels with it
    (experiments/executorch_delegation)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ragged = (x.shape[-2] % self.size != 0) | (x.shape[-1] % self.size != 0)
        return F.avg_pool2d(x, self.size, self.size, ceil_mode=ragged)


class RLMHSA(nn.Module):
    """Softmax(X (XW)ᵀ) XW: keys and values share one projection, queries are the input itself.
    Keys/values come from the input average-pooled by ``sr`` (see the module docstring)."""

    def __init__(self, dim: int, sr: int = 1):
        super().__init__()
        self.heads = num_heads(dim)
        self.scale = (dim // self.heads) ** -0.5
        self.pool = RaggedAvgPool2d(sr) if sr > 1 else nn.Identity()
        self.proj = MultiGroupConv(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q = x.reshape(B, self.heads, C // self.heads, H * W).transpose(-2, -1)           # (B, h, N, d)
        kv = self.proj(self.pool(x)).flatten(2).reshape(B, self.heads, C // self.heads, -1).transpose(-2, -1)
        attn = batched_matmul(q * self.scale, kv.transpose(-2, -1)).softmax(dim=-1)
        return batched_matmul(attn, kv).transpose(-2, -1).reshape(B, C, H, W)


class FMB(nn.Module):
    """Multi-frequency fusion block (see the module docstring) with ``hf_branches`` high bands."""

    def __init__(self, dim: int, fm_width: int, out_width: int, hf_branches: int, sr: int = 1,
                 ratio: float = MLP_RATIO):
        super().__init__()
        self.drop_path = nn.Identity()   # stochastic depth: set_drop_path
        self.reduce = MultiGroupConv(dim, fm_width, 1, branches=UNGROUPED_BRANCHES, act=nn.ReLU)
        self.high = nn.ModuleList(CFB(fm_width, ratio) for _ in range(hf_branches))
        self.low = RLMHSA(fm_width, sr)
        self.fuse = SplitConvNorm((dim, fm_width) + (fm_width,) * hf_branches, out_width)
        self.mlp = GMLP(out_width, ratio)

    def fused(self, x: torch.Tensor, bands: list[torch.Tensor], n: int) -> torch.Tensor:
        """The fusion of the input, the low band of the n-th high band, and the first n high bands
        (``bands[0]`` is the reduced input, ``bands[i]`` the i-th CFB's output)."""
        return self.fuse([x, self.low(bands[n])] + bands[1:n + 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = [self.reduce(x)]
        for blk in self.high:
            bands.append(blk(bands[-1]))
        y = self.fused(x, bands, len(self.high))
        return y + self.drop_path(self.mlp(y))

    def zero_init_last(self) -> None:
        self.mlp.zero_init_last()


class ElasticFMB(FMB):
    """The supernet's FMB: built with the most high bands searched, it mixes the fusions of every
    searched count with a ``KnobChoice`` (α over ``values``, Gumbel-softmax as a MetaPath). Kept
    apart from the static `FMB` that configs and published variants build, as OFA keeps its
    dynamic layers apart from their static twins; a sub-network's FMB is the static one."""

    def __init__(self, dim: int, fm_width: int, out_width: int, hf_branches: tuple[int, ...], sr: int = 1,
                 ratio: float = MLP_RATIO):
        super().__init__(dim, fm_width, out_width, max(hf_branches), sr, ratio)
        self.values = tuple(hf_branches)
        self.split = KnobChoice("hf_branches", self.values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = [self.reduce(x)]

        def fused(n: int) -> torch.Tensor:   # bands are computed once, as far as a split needs, and shared
            while len(bands) <= n:
                bands.append(self.high[len(bands) - 1](bands[-1]))
            return self.fused(x, bands, n)

        y = self.split.mix(lambda i: fused(self.values[i]))
        return y + self.drop_path(self.mlp(y))


class Stem(nn.Sequential):
    def __init__(self, out_chs: int, in_chs: int = 3):
        super().__init__(MultiGroupConv(in_chs, out_chs, 3, 2, branches=EDGE_BRANCHES, act=nn.ReLU),
                         _dw(out_chs, stride=2, act=nn.ReLU),
                         MultiGroupConv(out_chs, out_chs, 1, act=nn.ReLU))


class PatchEmbed(nn.Sequential):
    """AvgPool 2x2/2 (when the stage halves the resolution) + multi-group Conv-BN 1x1 (when the
    width changes or after pooling); empty (the identity) otherwise."""

    def __init__(self, in_chs: int, out_chs: int, downsample: bool):
        layers = [nn.AvgPool2d(2, 2)] if downsample else []
        if downsample or in_chs != out_chs:
            layers.append(MultiGroupConv(in_chs, out_chs, 1, branches=UNGROUPED_BRANCHES))
        super().__init__(*layers)


class Stage(nn.Module):
    def __init__(self, in_chs: int, dim: int, blocks: list[nn.Module], downsample: bool, fmb: FMB | None):
        super().__init__()
        self.downsample = PatchEmbed(in_chs, dim, downsample)
        self.blocks = nn.ModuleList(blocks)
        self.fmb = fmb if fmb is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for blk in self.blocks:
            x = blk(x)
        return self.fmb(x)


def stage_out_width(stage) -> int:
    return stage.knobs.get("out_width", stage.width) if "fm_width" in stage.knobs else stage.width


def _make_fmb(stage, j: int) -> FMB | None:
    """The stage's FMB; the supernet's skeleton gives ``hf_branches`` as the tuple of searched values."""
    if "fm_width" not in stage.knobs:
        return None
    hf = stage.knobs.get("hf_branches", MAX_HF_BRANCHES)
    block = ElasticFMB if isinstance(hf, tuple) else FMB
    return block(stage.width, stage.knobs["fm_width"], stage_out_width(stage), hf, reduction_ratio(j))


class FMViT(FamilyModel):
    def __init__(self, config: ArchConfig, img_size: int | None = None, make_block=None, in_chans: int = 3,
                 global_pool: str = "avg"):
        super().__init__(config, in_chans)
        make_block = make_block or _make_block
        self.stem = Stem(config.stem_width, in_chans)
        in_chs, stages = config.stem_width, []
        for j, st in enumerate(config.stages):
            blocks = [make_block(spec, st.width, (0, 0)) for spec in st.blocks]
            stages.append(Stage(in_chs, st.width, blocks, downsample=j > 0, fmb=_make_fmb(st, j)))
            in_chs = stage_out_width(st)
        self.stages = nn.ModuleList(stages)
        self.head = LinearHead(in_chs, config.num_classes, global_pool)
        self.declare_features([stage_out_width(st) for st in config.stages])
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        for m in self.modules():
            if isinstance(m, (CFB, FMB)):
                m.zero_init_last()


def _make_block(spec: BlockSpec, dim: int, grid: tuple[int, int]) -> nn.Module:
    if spec.kind == "cfb":
        return CFB(dim, spec.knobs.get("ratio", MLP_RATIO))
    raise ConfigError(f"unknown fmvit block kind {spec.kind!r} (known: {', '.join(BLOCK_KINDS)})")


# ---------------------------------------------------------------------------- op graph
def op_nodes(config: ArchConfig) -> list[OpNode]:
    """stem, per stage its patch embedding, CFBs and FMB (one op: its split and widths are in the
    key), then the head."""
    res, c_in = config.resolution, config.stem_width
    nodes = [OpNode("stem", f"fm-stem:3>{c_in}:{res}x{res}", "stem", (1, 3, res, res), lambda c=c_in: Stem(c))]
    for j, st in enumerate(config.stages):
        side, c = res // (4 * 2 ** j), st.width
        prev = side * 2 if j > 0 else side
        if j > 0 or c_in != c:
            nodes.append(OpNode(f"stages.{j}.downsample", f"fm-embed:{c_in}>{c}:s{2 if j else 1}:{prev}x{prev}",
                                "downsample", (1, c_in, prev, prev), lambda a=c_in, b=c, d=j > 0: PatchEmbed(a, b, d)))
        for i, spec in enumerate(st.blocks):
            ratio = spec.knobs.get("ratio", MLP_RATIO)
            nodes.append(OpNode(f"stages.{j}.blocks.{i}", f"cfb:c{c}:r{ratio:g}:{side}x{side}", "cfb",
                                (1, c, side, side), lambda s=spec, d=c: _make_block(s, d, (0, 0))))
        k = st.knobs
        if "fm_width" in k:
            n = k.get("hf_branches", MAX_HF_BRANCHES)
            nodes.append(OpNode(f"stages.{j}.fmb", f"fmb:c{c}:f{k['fm_width']}:n{n}:o{stage_out_width(st)}:"
                                f"sr{reduction_ratio(j)}:{side}x{side}", "fmb", (1, c, side, side),
                                lambda s=st, i=j: _make_fmb(s, i)))
        c_in = stage_out_width(st)
    side = res // 32
    nodes.append(OpNode("head", f"fm-head:c{c_in}:{side}x{side}:k{config.num_classes}", "head", (1, c_in, side, side),
                        lambda c=c_in, k=config.num_classes: LinearHead(c, k)))
    return nodes


# ---------------------------------------------------------------------------- validation
def _check_knob_values(j: int, name: str, values, width_step: int) -> None:
    where = f"stages[{j}].{name}"
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}: {v!r} is not an integer")
        if name == "hf_branches" and not 0 <= v <= MAX_HF_BRANCHES:
            raise ConfigError(f"{where}: {v} is out of range 0..{MAX_HF_BRANCHES} (high-frequency CFB branches)")
        if name != "hf_branches" and (v < width_step or v % width_step or v > MAX_WIDTH):
            raise ConfigError(f"{where}: {v} is not a positive multiple of {width_step} up to {MAX_WIDTH}")


def _check_stage_knobs(j: int, knobs, width_step: int) -> None:
    if "fm_width" not in knobs:
        extra = sorted(set(knobs) & {"hf_branches", "out_width"})
        if extra:
            raise ConfigError(f"stages[{j}].{extra[0]}: only a stage with an FMB (one with `fm_width`) has it")
    for name, values in knobs.items():
        _check_knob_values(j, name, values if isinstance(values, tuple) else (values,), width_step)


# The FMB is not a block kind: each stage ends in one, set by the stage's `fm_width`.
def validate(config: ArchConfig) -> None:
    for j, st in enumerate(config.stages):
        _check_stage_knobs(j, st.knobs, config.width_step)


def validate_space(space: SearchSpace) -> None:
    for j, st in enumerate(space.stages):
        _check_stage_knobs(j, st.knobs, space.width_step)


# ---------------------------------------------------------------------------- family
VARIANTS = ("t", "s", "m", "b", "l")


def stem_width(widths) -> int:
    """The published stems: the first stage's width up to 64 (T 32, S 48), then 64 (M/B/L: 96)."""
    return min(widths[0], 64)


FAMILY = register_family(Family(
    name="fmvit", build=FMViT, block_kinds=BLOCK_KINDS, make_block=_make_block, op_nodes=op_nodes,
    validate=validate, validate_space=validate_space,
    block_knobs=("ratio",), stage_knobs=STAGE_KNOBS, variants=VARIANTS, stem_width=stem_width,
    timm_cfg={"first_conv": "stem.0.main.conv", "classifier": ("head.fc",)},
    alpha_knobs=("hf_branches",),
    # Grouped train-time branches do not survive a channel permutation: keep the trained order.
    channel_reorder=False,
))
