"""EfficientFormer (v1): dimension-consistent ViT with Meta4D (pool mixer) and Meta3D (MHSA) blocks.

Paper: "EfficientFormer: Vision Transformers at MobileNet Speed" (arXiv 2206.01191), §4.
Widths, depths and parameter counts of L1/L3/L7 are timm's (checked in the tests). Module names
follow timm's ``efficientformer.py`` so that
``convert_timm_state_dict`` is a renaming, and the counts equal timm's to the parameter.

Kinds: ``mb4d`` (Meta4D, (B, C, H, W)) and ``mb3d`` (Meta3D, (B, N, C)). A stage runs its 4D
blocks first and reshapes once into tokens for its 3D tail. The attention bias table is sized
for the actual token grid (7x7 at 224, 2x2 at 64), not fixed at 7x7 as in timm.

Deploy form: every Conv-BN pair is folded (``ConvNorm.reparameterize``); nothing else changes.
"""

import re

import torch
import torch.nn as nn
from timm.layers import resize_rel_pos_bias_table_levit

from supernets.config import ArchConfig, BlockSpec, ConfigError
from supernets.layers import (
    batched_matmul,
    ConvNorm,
    FamilyModel,
    LayerScale,
    DistilledHead,
    Reshape,
    to_map,
    to_tokens,
)
from supernets.registry import Family, OpNode, register_family

BLOCK_KINDS = ("mb4d", "mb3d")
MLP_RATIO = 4


class Attention(nn.Module):
    """MHSA with a learned relative-position bias per (|dy|, |dx|) offset of the token grid.

    qkv is one Linear whose output is laid out per head as [q(key_dim), k(key_dim), v(attn_ratio*key_dim)].
    """

    def __init__(self, dim: int, grid: tuple[int, int], key_dim: int = 32, num_heads: int = 8, attn_ratio: int = 4):
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.scale = key_dim ** -0.5
        self.val_dim = attn_ratio * key_dim
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Linear(num_heads * self.val_dim, dim)
        pos = torch.stack(torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")).flatten(1)
        rel = (pos[..., :, None] - pos[..., None, :]).abs()
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, grid[0] * grid[1]))
        self.register_buffer("attention_bias_idxs", rel[0] * grid[1] + rel[1], persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Weights trained at another resolution hold a bias table of another grid: resample it
        # (bicubic over the offset grid, as timm resizes LeViT-style tables) so a model trained at
        # 64 px loads, and exports, at 224 px.
        key = prefix + "attention_biases"
        table = state_dict.get(key)
        if table is not None and table.shape != self.attention_biases.shape and table.shape[0] == self.num_heads:
            heads, points = self.attention_biases.shape
            state_dict[key] = resize_rel_pos_bias_table_levit(table.T, (points, heads)).T.contiguous()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def freeze_for_export(self) -> None:
        """Gather the (heads, N, N) bias from its table once and keep it, so that an exported graph
        holds it as a constant: the gather, an ``aten.index``, is an op XNNPACK does not take
        (experiments/executorch_delegation). For a copy made to be exported (``lut.pte.for_xnnpack``):
        a table changed afterwards is not seen."""
        with torch.no_grad():
            self._frozen_bias = self.attention_biases[:, self.attention_bias_idxs].clone()

    def relative_bias(self) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.attention_biases[:, self.attention_bias_idxs]
        return self._bias()

    @torch.jit.unused
    def _bias(self) -> torch.Tensor:
        frozen = getattr(self, "_frozen_bias", None)
        return self.attention_biases[:, self.attention_bias_idxs] if frozen is None else frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        # slices, not ``split``: XNNPACK takes slices; a split stays with ExecuTorch's portable kernels
        kd = self.key_dim
        q, k, v = qkv[..., :kd], qkv[..., kd:2 * kd], qkv[..., 2 * kd:]
        attn = batched_matmul(q, k.transpose(-2, -1)) * self.scale + self.relative_bias()
        x = batched_matmul(attn.softmax(dim=-1), v).transpose(1, 2).reshape(B, N, -1)
        return self.proj(x)


class Pooling(nn.Module):
    """PoolFormer token mixer: avgpool(x) - x (the residual adds x back)."""

    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class ConvMlp(nn.Module):
    """1x1 Conv-BN-GELU-1x1 Conv-BN, no pre-norm (the BN of the previous block plays that role)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = ConvNorm(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = ConvNorm(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Meta4D(nn.Module):
    """MB4D: x + LS1*(pool(x) - x); x + LS2*ConvMlp(x)."""

    token_input = False

    def __init__(self, dim: int, mlp_ratio: int = MLP_RATIO, ls_init: float = 1e-5):
        super().__init__()
        self.drop_path = nn.Identity()   # stochastic depth: set_drop_path
        self.token_mixer = Pooling()
        self.ls1 = LayerScale(dim, ls_init, channel_dim=1)
        self.mlp = ConvMlp(dim, dim * mlp_ratio)
        self.ls2 = LayerScale(dim, ls_init, channel_dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.token_mixer(x)))
        return x + self.drop_path(self.ls2(self.mlp(x)))


class Meta3D(nn.Module):
    """MB3D: pre-LN transformer block on tokens, attention with relative-position bias."""

    token_input = True

    def __init__(self, dim: int, grid: tuple[int, int], mlp_ratio: int = MLP_RATIO, ls_init: float = 1e-5):
        super().__init__()
        self.drop_path = nn.Identity()   # stochastic depth: set_drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = Attention(dim, grid)
        self.ls1 = LayerScale(dim, ls_init)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.ls2 = LayerScale(dim, ls_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.token_mixer(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class Stem(nn.Sequential):
    """Two stride-2 3x3 Conv-BN-ReLU: 3 -> C/2 -> C, overall stride 4."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv1 = ConvNorm(in_chs, out_chs // 2, 3, stride=2)
        self.act1 = nn.ReLU()
        self.conv2 = ConvNorm(out_chs // 2, out_chs, 3, stride=2)
        self.act2 = nn.ReLU()


class Stage(nn.Module):
    """Optional stride-2 Conv-BN embedding, then the blocks: the 4D ones on the map, the 3D tail
    (from ``first_token``) on tokens. A non-final stage always returns a (B, C, H, W) map so the
    next embedding can convolve it; the final one returns tokens when it has a 3D tail
    (``ends_in_tokens``). The form is fixed at build, so fx and TorchScript see no shape tests."""

    def __init__(self, in_chs: int, dim: int, blocks: list[nn.Module], downsample: bool, last: bool):
        super().__init__()
        self.downsample = ConvNorm(in_chs, dim, 3, stride=2) if downsample else nn.Identity()
        self.blocks = nn.ModuleList(blocks)
        self.last = last
        forms = [bool(getattr(b, "token_input", False)) for b in blocks]
        if forms != sorted(forms):
            raise ConfigError("efficientformer: a stage runs its mb4d blocks before its mb3d blocks")
        self.first_token = forms.index(True) if True in forms else len(blocks)
        self.ends_in_tokens = self.first_token < len(blocks) and last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        grid = (x.shape[2], x.shape[3])
        for i, blk in enumerate(self.blocks):
            if i == self.first_token:
                x = to_tokens(x)
            x = blk(x)
        if self.first_token < len(self.blocks) and not self.last:
            x = to_map(x, grid)
        return x


class Head(DistilledHead):
    """LayerNorm on tokens, mean over tokens, classifier (+ distillation classifier, averaged at
    eval). Unpooled (``global_pool=''``) it gives the normed tokens, as timm's EfficientFormer."""

    def __init__(self, dim: int, num_classes: int, distillation: bool, global_pool: str = "avg",
                 tokens_in: bool = True):
        super().__init__(dim, global_pool)
        self.tokens_in = tokens_in   # False: the last stage has no mb3d tail and ends in a map
        self.norm = nn.LayerNorm(dim)
        self.head = self.classifier(num_classes)
        self.head_dist = self.classifier(num_classes) if distillation else None

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tokens_in:
            x = to_tokens(x)
        return self.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool != "avg":
            return x
        # the mean over tokens as a 4D spatial mean, (B, C, N, 1): the only mean XNNPACK takes
        return x.transpose(1, 2).unsqueeze(-1).mean((2, 3), keepdim=True).flatten(1)


class EfficientFormer(FamilyModel):
    def __init__(self, config: ArchConfig, img_size: int | None = None, make_block=None, in_chans: int = 3,
                 global_pool: str = "avg"):
        super().__init__(config, in_chans)
        img_size = img_size or config.resolution
        make_block = make_block or _make_block
        self.final_grid = (img_size // 32, img_size // 32)   # the last stage's token grid
        self.stem = Stem(in_chans, config.stem_width)
        in_chs, stages = config.stem_width, []
        for j, st in enumerate(config.stages):
            side = img_size // (4 * 2 ** j)
            blocks = [make_block(spec, st.width, (side, side)) for spec in st.blocks]
            stages.append(Stage(in_chs, st.width, blocks, downsample=j > 0, last=j == len(config.stages) - 1))
            in_chs = st.width
        self.stages = nn.ModuleList(stages)
        self.head = Head(in_chs, config.num_classes, bool(config.head.get("distillation", False)), global_pool,
                         tokens_in=stages[-1].ends_in_tokens)
        self.declare_features([st.width for st in config.stages])
        self.init_weights()

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return to_map(x, self.final_grid) if x.ndim == 3 else x

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "attention_biases" in n}


def _make_block(spec: BlockSpec, dim: int, grid: tuple[int, int]) -> nn.Module:
    mlp_ratio = int(spec.knobs.get("mlp_ratio", MLP_RATIO))
    if spec.kind == "mb4d":
        return Meta4D(dim, mlp_ratio)
    if spec.kind == "mb3d":
        return Meta3D(dim, grid, mlp_ratio)
    raise ConfigError(f"unknown efficientformer block kind {spec.kind!r} (known: {', '.join(BLOCK_KINDS)})")


# ---------------------------------------------------------------------------- op graph
def op_nodes(config: ArchConfig) -> list[OpNode]:
    """The network as the sequence of ops a latency table prices, in forward order."""
    res, nodes = config.resolution, []
    c_in = config.stem_width
    nodes.append(OpNode("stem", f"stem:3>{c_in}:{res}x{res}", "stem", (1, 3, res, res),
                        lambda c=c_in: Stem(3, c)))
    form = "map"
    for j, st in enumerate(config.stages):
        side = res // (4 * 2 ** j)
        hw = f"{side}x{side}"
        c = st.width
        if j > 0:
            prev = side * 2
            nodes.append(OpNode(f"stages.{j}.downsample", f"embed:{c_in}>{c}:{prev}x{prev}", "embed",
                                (1, c_in, prev, prev), lambda a=c_in, b=c: ConvNorm(a, b, 3, stride=2)))
        for i, spec in enumerate(st.blocks):
            tokens = spec.kind == "mb3d"
            if tokens and form == "map":
                nodes.append(OpNode(f"stages.{j}.to_tokens", f"reshape:tokens:c{c}:{hw}", "reshape",
                                    (1, c, side, side), lambda g=(side, side): Reshape("tokens", g)))
                form = "tokens"
            elif not tokens and form == "tokens":
                nodes.append(OpNode(f"stages.{j}.to_map", f"reshape:map:c{c}:{hw}", "reshape",
                                    (1, side * side, c), lambda g=(side, side): Reshape("map", g)))
                form = "map"
            knobs = "".join(f":{k}{v}" for k, v in sorted(spec.knobs.items()))
            in_shape = (1, side * side, c) if tokens else (1, c, side, side)
            nodes.append(OpNode(f"stages.{j}.blocks.{i}", f"{spec.kind}:c{c}:{hw}{knobs}", spec.kind, in_shape,
                                lambda s=spec, d=c, g=(side, side): _make_block(s, d, g)))
        if form == "tokens" and j < len(config.stages) - 1:
            nodes.append(OpNode(f"stages.{j}.to_map", f"reshape:map:c{c}:{hw}", "reshape",
                                (1, side * side, c), lambda g=(side, side): Reshape("map", g)))
            form = "map"
        c_in = c
    side = res // 32
    dist = int(bool(config.head.get("distillation", False)))
    in_shape = (1, side * side, c_in) if form == "tokens" else (1, c_in, side, side)
    nodes.append(OpNode("head", f"head:c{c_in}:{side}x{side}:{form}:k{config.num_classes}:d{dist}", "head", in_shape,
                        lambda c=c_in, k=config.num_classes, d=bool(dist), t=form == "tokens": Head(c, k, d,
                                                                                                 tokens_in=t)))
    return nodes


# ---------------------------------------------------------------------------- validation
def validate(config: ArchConfig) -> None:
    if config.stem_width != config.stages[0].width:
        raise ConfigError(f"stem.width: {config.stem_width} must equal stages[0].width ({config.stages[0].width}): "
                          "EfficientFormer's first stage has no embedding")
    for j, st in enumerate(config.stages):
        seen_tokens = False
        for i, b in enumerate(st.blocks):
            if b.kind == "mb3d":
                seen_tokens = True
            elif seen_tokens:
                raise ConfigError(f"stages[{j}].blocks[{i}]: mb4d after mb3d; the 3D blocks of a stage must come after all its "
                                  "4D blocks (one reshape per stage)")


# ---------------------------------------------------------------------------- timm interop
def convert_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ``efficientformer_*`` state dict to this module's names.

    timm keeps a parameter-free ``Flat`` module inside the last stage's block list, so block
    indices are renumbered over the blocks that hold parameters; timm's sibling conv/BN pairs
    (``fc1``/``norm1``) become our ``ConvNorm`` (``fc1.conv``/``fc1.norm``).
    """
    block = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")
    ids: dict[str, set[int]] = {}
    for k in state_dict:
        if m := block.match(k):
            ids.setdefault(m[1], set()).add(int(m[2]))
    renumber = {(s, b): i for s, bs in ids.items() for i, b in enumerate(sorted(bs))}
    conv_mlp_blocks = {k[: -len("mlp.norm1.weight")] for k in state_dict if k.endswith(".mlp.norm1.weight")}
    renames = [
        (r"^stem\.conv([12])\.", r"stem.conv\1.conv."),
        (r"^stem\.norm([12])\.", r"stem.conv\1.norm."),
        (r"\.mlp\.norm([12])\.", r".mlp.fc\1.norm."),
        (r"^norm\.", "head.norm."),
        (r"^head\.(weight|bias)$", r"head.head.\1"),
        (r"^head_dist\.", "head.head_dist."),
    ]
    out = {}
    for key, value in state_dict.items():
        if key.endswith("attention_bias_idxs"):  # a derived index buffer; ours is rebuilt per grid
            continue
        k = key
        if m := block.match(key):
            if m[0] in conv_mlp_blocks:
                k = re.sub(r"\.mlp\.fc([12])\.(weight|bias)$", r".mlp.fc\1.conv.\2", k)
            k = f"stages.{m[1]}.blocks.{renumber[m[1], int(m[2])]}." + k[m.end():]
        for pat, rep in renames:
            k = re.sub(pat, rep, k)
        out[k] = value
    return out


# config `head:` options: name -> (type, low, high)
HEAD_OPTIONS = {"distillation": (bool, None, None)}


FAMILY = register_family(Family(
    name="efficientformer", build=EfficientFormer, block_kinds=BLOCK_KINDS, make_block=_make_block, op_nodes=op_nodes,
    validate=validate, block_knobs=("mlp_ratio",), head_options=HEAD_OPTIONS,
    token_kinds=("mb3d",),
    variants=("l1", "l3", "l7"),
    # the attention biases are sized for the token grid at the built resolution
    timm_cfg={"first_conv": "stem.conv1.conv", "classifier": ("head.head", "head.head_dist"),
              "fixed_input_size": True, "crop_pct": 0.95},
))
