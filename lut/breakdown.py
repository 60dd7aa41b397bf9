"""Where a network's milliseconds go on a device: per stage and per kind of op.

A table prices a network as the sum of its LUT ops (whole blocks, the stem, downsamplings, the
head; ``lut.table``), so the time per stage is the table's own figure. Within a block the table
holds one time; it is split over the block's kinds of op (attention, MLP / FFN, depthwise conv,
other conv / linear, norm, reshape / permute, elementwise, pooling) in proportion to what the
Core ML cost model (``lut.estimate``) charges each of them: exact for an estimated Apple table,
whose block times are that model's, and an attribution for a measured one. Stem, downsampling
and head ops are one kind of their own, whole, as in the EfficientFormer paper's Fig. 2.

On an estimated table, `swish_note` adds what a config's SiLU/HardSwish may cost instead: the
estimate charges them as any activation, and what they cost depends on the iOS stack.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lut import estimate, graph
from lut.features import FEATURES, profile, profile_parts
from lut.table import OVERHEAD_KEY, LatencyTable
from supernets.config import ArchConfig

STEM_DOWNSAMPLE_HEAD = "stem / downsample / head"
KINDS = ("attention", "MLP / FFN", "depthwise conv", "conv / linear", "norm", "reshape / permute", "elementwise",
         "pooling", STEM_DOWNSAMPLE_HEAD, "call overhead")
# the op kinds (``OpNode.kind``) that are one kind whole
_WHOLE = {"stem", "embed", "downsample", "head"}
_ATTENTION = re.compile(r"Attention|MHSA|SHMA")
_MLP = re.compile(r"Mlp|MLP|FFN")
_MLP_NAMES = {"mlp", "ffn"}
_BY_FEATURE = {"dense_gmacs": "conv / linear", "attention_gmacs": "attention", "softmax_mb": "attention",
               "depthwise_mb": "depthwise conv", "norm_mb": "norm", "layout_mb": "reshape / permute",
               "elementwise_mb": "elementwise", "activation_mb": "elementwise", "pool_mb": "pooling"}


def _kind_in_block(modules: list[torch.nn.Module], names: set[int], feature: str) -> str:
    """An aten op's kind: that of the attention or MLP it runs in, else its feature's."""
    for m in modules:
        if _ATTENTION.search(type(m).__name__):
            return "attention"
        if _MLP.search(type(m).__name__) or id(m) in names:
            return "MLP / FFN"
    return _BY_FEATURE[feature]


def op_shares(op, weights: dict[str, float]) -> dict[str, float]:
    """How one LUT op's time splits over KINDS (shares summing to 1), by the cost model's
    `weights` (ms per unit of each feature)."""
    if op.kind in _WHOLE:
        return {STEM_DOWNSAMPLE_HEAD: 1.0}
    module = graph.deploy_module(op)
    mlp_modules = {id(m) for n, m in module.named_modules() if n.rpartition(".")[2] in _MLP_NAMES}
    parts = profile_parts(module, tuple(op.in_shape), lambda mods, f: _kind_in_block(mods, mlp_modules, f))
    cost = {kind: sum(weights[k] * feats[k] for k in FEATURES if k != "weight_mb") for kind, feats in parts.items()}
    total = sum(cost.values())
    if total <= 0:   # no compute the model charges (a pure reshape): its own kind
        return {"reshape / permute": 1.0}
    return {kind: c / total for kind, c in cost.items() if c > 0}


@dataclass
class Breakdown:
    label: str
    total_ms: float
    by_stage: dict[str, float]
    by_kind: dict[str, float]


def _stage(op_name: str) -> str:
    if op_name.startswith("stages."):
        return f"stage {int(op_name.split('.')[1]) + 1}"
    return op_name   # stem, head, call overhead


def breakdown(table: LatencyTable, config: ArchConfig, weights: dict[str, float], label: str = "") -> Breakdown:
    """`config`'s latency on `table`, per stage and per kind of op (module docstring)."""
    ops = {op.key: op for op in graph.ops(config)}
    by_stage: dict[str, float] = {}
    by_kind = dict.fromkeys(KINDS, 0.0)
    shares: dict[str, dict[str, float]] = {}
    for name, key, ms in table.breakdown(config):
        by_stage[_stage(name)] = by_stage.get(_stage(name), 0.0) + ms
        if key == OVERHEAD_KEY:
            by_kind["call overhead"] += ms
            continue
        if key not in shares:
            shares[key] = op_shares(ops[key], weights)
        for kind, share in shares[key].items():
            by_kind[kind] += share * ms
    return Breakdown(label or config.name or config.family, sum(by_stage.values()), by_stage,
                     {k: v for k, v in by_kind.items() if v > 0})


def swish_mb(config: ArchConfig) -> float:
    """MB moved by SiLU/HardSwish in `config`, summed over its LUT ops as a table prices it."""
    return sum(profile(graph.deploy_module(op), tuple(op.in_shape))["swish_mb"] for op in graph.ops(config))


def _swish_cost(table: LatencyTable | None, config: ArchConfig):
    """(cost model, its source, the features `CostModel.swish_cost` reads) of `config` on an
    estimated Apple table (priced by the cost model in the table's folder, else the shipped one);
    None on a timed table."""
    source = table.environment.get("estimate_source") if table is not None else None
    if source is None:
        return None
    model = estimate.CostModel.load(estimate.cost_model_path(table.path.parent if table.path else None))
    return model, source, {"swish_mb": swish_mb(config)}


def swish_extra_ms(table: LatencyTable | None, config: ArchConfig) -> float | str:
    """How much more `config` would take on an estimated Apple table if its SiLU/HardSwish cost what
    the table's protocol's published rows say (`lut.estimate.CostModel.swish_cost`): 0 where it has
    none; '' on a timed table. MobileViTv3 is built on SiLU, so `nas slim --family all` compares
    it with families that are not at the estimate's discount."""
    found = _swish_cost(table, config)
    if found is None:
        return ""
    cost = found[0].swish_cost(found[2], found[1])
    return round(cost[2] - cost[1], 4) if cost else 0.0


def swish_note(table: LatencyTable | None, config: ArchConfig) -> str | None:
    """`lut.estimate.CostModel.swish_note` for `config` on an estimated Apple table, else None."""
    found = _swish_cost(table, config)
    return found[0].swish_note(found[2], found[1]) if found else None


def render(rows: list[Breakdown], device: str) -> str:
    """The breakdowns side by side as text: ms and share of the total per stage, then per kind."""
    width = max(14, *(len(b.label) + 2 for b in rows))
    head = f"  {'on ' + device:<26s}" + "".join(f"{b.label:>{width}s}" for b in rows)
    lines = [head, f"  {'total':<26s}" + "".join(f"{b.total_ms:>{width - 6}.3f} ms   " for b in rows)]
    for title, attr in (("per stage", "by_stage"), ("per kind of op", "by_kind")):
        keys = list(dict.fromkeys(k for b in rows for k in getattr(b, attr)))
        if attr == "by_kind":
            keys = [k for k in KINDS if k in keys]
        lines.append(f"  {title}")
        for k in keys:
            cells = []
            for b in rows:
                ms = getattr(b, attr).get(k, 0.0)
                cells.append(f"{ms:>{width - 6}.3f} {100 * ms / b.total_ms:3.0f} %")
            lines.append(f"    {k:<24s}" + "".join(cells))
    return "\n".join(lines)


def draw(rows: list[Breakdown], device: str, path: Path) -> Path:
    """Stacked bars, one per config: per stage (left) and per kind of op (right); written atomically."""
    import matplotlib.pyplot as plt

    from nas.core import io

    labels = [b.label for b in rows]
    with io.png_figure(path, ncols=2, figsize=(11, 1.8 + 0.6 * len(rows))) as (fig, axes):
        for ax, attr, title in ((axes[0], "by_stage", "per stage"), (axes[1], "by_kind", "per kind of op")):
            keys = list(dict.fromkeys(k for b in rows for k in getattr(b, attr)))
            if attr == "by_kind":
                keys = [k for k in KINDS if k in keys]
            colours = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
            left = [0.0] * len(rows)
            for i, k in enumerate(keys):
                values = [getattr(b, attr).get(k, 0.0) for b in rows]
                ax.barh(labels, values, left=left, label=k, color=colours(i))
                left = [a + v for a, v in zip(left, values)]
            ax.set_title(f"{title} on {device}", fontsize=10)
            ax.set_xlabel("ms")
            ax.invert_yaxis()
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, frameon=False)
        fig.tight_layout()
    return Path(path)
