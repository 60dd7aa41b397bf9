"""Would roofline-style features make the Apple estimate generalise to unseen architectures?
(#32 part 1, tried and measured; not adopted.)

The shipped cost model (`lut/estimate.py`, features of `lut/features.py`) charges every weight
conv/linear by its MACs. This variant charges a dense op by its MACs only when it is
compute-bound (MACs per byte moved >= a machine balance) and by its bytes (activations in and out
plus weights) when it is memory-bound, and splits two more features off: elementwise ops that
broadcast (squeeze-excitation's scaling, gates) and global reductions (SE's pooling, linear
attention's context sum) apart from windowed pooling. Everything else, the fit
(`lut.estimate.fit`) and the judge (`lut.published.leave_family_out`), is the shipped one.

    python experiments/apple_estimate/roofline_features.py     # ~1 minute: profiles 134 models on meta

Writes roofline.md here.
"""
from __future__ import annotations

import datetime
import sys
from pathlib import Path

import numpy as np
import torch

import lut.estimate as estimate
from lut import features as F
from lut import published
from nas.core import io

HERE = Path(__file__).resolve().parent
BALANCES = (30.0, 100.0, 300.0)   # MACs per byte where a dense op turns compute-bound
EXTRA = ("dense_mb", "broadcast_mb", "reduce_mb")
_REDUCTIONS = {"mean", "sum", "amax", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d"}


class _RooflineProfiler(F._Profiler):
    """`lut.features._Profiler`, keeping each dense op's (GMACs, MB) and the split features."""

    def __init__(self, params):
        super().__init__(params)
        self.features.update(dict.fromkeys(EXTRA, 0.0))
        self.dense: list[tuple[float, float]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        ins, outs = F._tensors((args, kwargs)), F._tensors(out)
        from_weight = any(id(t) in self._weights for t in ins)
        if from_weight and name in F._VIEWS:
            for t in outs:
                self._weights.add(id(t))
                self._keep.append(t)
            return out
        acts = [t for t in ins if id(t) not in self._weights]
        feature, amount = self._feature(func, name, args, kwargs, out, acts, outs, from_weight)
        if feature is None:
            return out
        if feature == "dense_gmacs":
            self.dense.append((amount, F._mb(ins + outs)))
        elif feature == "elementwise_mb" and len({tuple(t.shape) for t in acts}) > 1:
            feature = "broadcast_mb"
        elif feature == "pool_mb" and name in _REDUCTIONS:
            feature = "reduce_mb"
        self.features[feature] += amount
        self.features["ops"] += 1
        return out


def _profile(name: str, resolution: int) -> tuple[dict, list]:
    model, res = published.build_model(name, resolution)
    for device in ("meta", "cpu"):
        try:
            m = model.to(device)
            with torch.no_grad(), _RooflineProfiler(list(m.parameters()) + list(m.buffers())) as prof:
                m(torch.zeros((1, 3, res, res), device=device))
            break
        except (NotImplementedError, RuntimeError):
            if device == "cpu":
                raise
            model = model.to_empty(device="cpu")
    prof.features["weight_mb"] = sum(p.numel() for p in model.parameters()) * F.BYTES_PER_ELEMENT / 1e6
    return prof.features, prof.dense


def _features(raw: dict, dense: list, balance: float | None) -> dict:
    """The shipped features (balance None) or the roofline variant's."""
    out = dict(raw)
    if balance is None:   # fold the splits back: the shipped model's features
        out["elementwise_mb"] += out.pop("broadcast_mb")
        out["pool_mb"] += out.pop("reduce_mb")
        out.pop("dense_mb")
        return out
    out["dense_gmacs"] = sum(g for g, mb in dense if g * 1e3 / max(mb, 1e-9) >= balance)
    out["dense_mb"] = sum(mb for g, mb in dense if g * 1e3 / max(mb, 1e-9) < balance)
    return out


def main() -> int:
    rows = published.calibration_rows()
    profiled = {key: _profile(*key) for key in dict.fromkeys((r.model, r.resolution) for r in rows)}
    lines = [f"# Roofline features for the Apple estimate: tried, measured, not adopted ({datetime.date.today()})", "",
             "    python experiments/apple_estimate/roofline_features.py", "", __doc__.split("\n\n")[1].replace("\n", " "),
             "", "Leave-architecture-family-out over the 175 published rows (`result.md`'s judge):", "",
             "| features | MAPE % | median APE % | within ±5 % | within ±10 % | Spearman | A14 iOS16 rows: MAPE %, "
             "±10 %, Spearman |", "|---|---|---|---|---|---|---|"]
    shipped = F.FEATURES
    for balance in (None, *BALANCES):
        names = shipped if balance is None else shipped[:1] + ("dense_mb",) + shipped[1:3] + (
            "elementwise_mb", "broadcast_mb") + shipped[4:8] + ("pool_mb", "reduce_mb") + shipped[9:]
        feats = {k: _features(raw, dense, balance) for k, (raw, dense) in profiled.items()}
        estimate.FEATURES = published.FEATURES = names   # the fit and its predictions read the feature names here
        try:
            pairs = published.leave_family_out(rows, feats)
        finally:
            estimate.FEATURES = published.FEATURES = shipped
        s = published.error_summary(pairs, by=lambda r: "all")["all"]
        a14 = published.error_summary(pairs)["A14 iOS16 ModelBench"]
        label = "shipped features (coreml-cost-v1), profiled again" if balance is None else f"roofline, balance {balance:g} MACs/byte"
        lines.append(f"| {label} | {s['mape_pct']:.1f} | {s['median_ape_pct']:.1f} | {s['within_5_pct']:.0f} | "
                     f"{s['within_10_pct']:.0f} | {s['spearman']:.3f} | {a14['mape_pct']:.1f}, "
                     f"{a14['within_10_pct']:.0f} %, {a14['spearman']:.3f} |")
    lines += ["", "Measured 2026-12-06: MAPE, median APE and Spearman improve (36 → 31 %, 26 → 18 %, 0.81 → 0.85; "
              "on the A14 iOS 16 rows, the iphone12 protocol, MAPE 40 → 31 %), the share within ±10 % does not "
              "(31 → 24–27 % overall). The misses that remain are whole architectures a protocol ran off the Neural "
              "Engine or at another speed (PoolFormer priced at 2x its published time, ConvNeXt and EfficientViT at a "
              "fraction), which no per-op feature sees; #32's goal (10 %, 0.95, 70 %) stays far either way. Not "
              "adopted yet: it changes the cost model's version and every shipped estimated table; the balance "
              "would be chosen on the same rows it is judged on, and the error bars say how far to trust either.", ""]
    io.write_text(HERE / "roofline.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
