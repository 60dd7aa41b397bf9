"""Which features make the Apple estimate generalise to architectures it never saw? (#32 part 1)

The shipped cost model (`lut/estimate.py`, features of `lut/features.py`) is a weighted sum of
per-network totals: MACs of weight convs/linears, MB moved by depthwise convs, elementwise
ops, activations, norms, softmax, layout changes and pooling, weight MB and op count. Each
candidate below changes the features only; the fit (`lut.estimate.fit`, every weight free, as
coreml-cost-v1 fitted them: `fit_trial.py` judges the fit) and the judge
(`lut.published.leave_family_out`: every architecture family predicted by a fit without it) are
the shipped ones.

- split: elementwise ops that broadcast (squeeze-excitation's scaling, gates, linear attention's
  context) and global reductions (SE's pooling, linear attention's context sum) get features of
  their own, apart from same-shape elementwise ops and windowed pooling (PoolFormer's token mixer);
- roofline: a dense op is charged by its MACs when compute-bound (MACs per byte moved >= 100) and
  by its MB when memory-bound;
- spill: the MB by which an op's tensors (activations in and out) exceed an on-chip buffer of
  T MB, per op: a Neural Engine op whose tensors do not fit streams them from DRAM;
- heads: one count per attention matmul and head (a per-kernel cost that a head count scales).

Each candidate is judged by leave-family-out over the published rows. Choosing the candidate on
the same rows it is judged on flatters it, so the last line chooses it *nested*: for every family
left out, the candidate with the smallest leave-family-out error on the other families only.

    python experiments/apple_estimate/features_trial.py     # profiles 134 models on meta, then fits

Writes features_trial.md here.
"""
from __future__ import annotations

import argparse
import datetime
import math
import sys
from pathlib import Path

import numpy as np
import torch

import lut.estimate as estimate
from lut import features as F
from lut import published
from nas.core import io

HERE = Path(__file__).resolve().parent
FIT_V1 = {"streamed": (), "floors": {}}   # the fit these candidates were judged with (coreml-cost-v1's)


class _OpRecorder(F._Profiler):
    """`lut.features._Profiler` that also keeps one record per costed aten op: (feature, amount,
    aten name, MB of activations in and out, MB of weights in, broadcast?, heads)."""

    def __init__(self, params):
        super().__init__(params)
        self.records: list[tuple] = []

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
        if feature is not None:
            weights = [t for t in ins if id(t) in self._weights]
            heads = math.prod(outs[0].shape[:-2]) if feature == "attention_gmacs" and outs else 0
            broadcast = len({tuple(t.shape) for t in acts + outs}) > 1
            self.records.append((feature, amount, name, F._mb(acts + outs), F._mb(weights), broadcast, heads))
        return out


def _records(name: str, resolution: int) -> tuple[list[tuple], float]:
    model, res = published.build_model(name, resolution)
    for device in ("meta", "cpu"):
        try:
            m = model.to(device)
            with torch.no_grad(), _OpRecorder(list(m.parameters()) + list(m.buffers())) as prof:
                m(torch.zeros((1, 3, res, res), device=device))
            break
        except (NotImplementedError, RuntimeError):
            if device == "cpu":
                raise
            model = model.to_empty(device="cpu")
    return prof.records, sum(p.numel() for p in model.parameters()) * F.BYTES_PER_ELEMENT / 1e6


_REDUCTIONS = {"mean", "sum", "amax", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d"}


def featurize(records: list[tuple], weight_mb: float, *, split=False, roofline=None, spill=None,
              heads=False) -> dict[str, float]:
    """A network's features from its op records, under one candidate's options."""
    out = dict.fromkeys(F.FEATURES, 0.0)
    out["weight_mb"] = weight_mb
    extra = (["broadcast_mb", "reduce_mb"] if split else []) + (["dense_mb"] if roofline else []) \
        + (["spill_mb"] if spill else []) + (["attention_heads"] if heads else [])
    out.update(dict.fromkeys(extra, 0.0))
    for feature, amount, name, act_mb, w_mb, broadcast, n_heads in records:
        out["ops"] += 1
        if split and feature == "elementwise_mb" and broadcast:
            feature = "broadcast_mb"
        elif split and feature == "pool_mb" and name in _REDUCTIONS:
            feature = "reduce_mb"
        if roofline and feature == "dense_gmacs" and amount * 1e3 / max(act_mb + w_mb, 1e-9) < roofline:
            feature, amount = "dense_mb", act_mb + w_mb
        out[feature] += amount
        if spill:
            out["spill_mb"] += max(0.0, act_mb - spill)
        if heads and n_heads:
            out["attention_heads"] += n_heads
    return out


CANDIDATES = {
    "shipped (coreml-cost-v1)": {},
    "split": {"split": True},
    "roofline 100": {"roofline": 100.0},
    "split + roofline 100": {"split": True, "roofline": 100.0},
    "spill 2 MB": {"spill": 2.0},
    "spill 6 MB": {"spill": 6.0},
    "split + spill 2 MB": {"split": True, "spill": 2.0},
    "split + spill 6 MB": {"split": True, "spill": 6.0},
    "heads": {"heads": True},
    "split + roofline 100 + spill 6 MB": {"split": True, "roofline": 100.0, "spill": 6.0},
    "split + roofline 100 + spill 6 MB + heads": {"split": True, "roofline": 100.0, "spill": 6.0, "heads": True},
}


CONCLUSION = (
    "**Split: better on architectures never seen, worse on those seen; measured, not adopted (2026-12-06).** "
    "Chosen nested, per family left out, the candidate is split, or split with more, for every family, and "
    "the nested figure, MAPE 32.6 % against the shipped 36.1 %, is what choosing among these candidates is "
    "worth on unseen architectures. Split moves FastViT from a 32 % to a 14 % median error, EfficientNet "
    "54 → 41 %, PoolFormer 111 → 83 %, Swin 32 → 18 %, FMViT 44 → 32 %. It was adopted as `coreml-cost-v2`, "
    "refitted, and taken back the same day, for what it did to the rows whose architecture the fit has seen "
    "(`run.py`'s leave-one-model-out, the kind of check #32's 27 iPhone-12 rows are): on the A14 iOS 16 rows, "
    "the protocol `iphone12` reproduces, the median error went from 8.7 to 12.3 % and Spearman from 0.962 to "
    "0.951, and the full fit priced EfficientFormer-L1/L3/L7 at 1.25/2.62/5.82 ms against 1.44/3.01/6.52 "
    "(published: 1.6, 3.0, 7.0): 13–22 % fast on the family the product slims first, whose held-out error went "
    "from 11 to 20 %. An on-chip buffer (spill) does not help at 2 or 6 MB; a roofline for dense ops and a "
    "per-head count help only with split. No candidate moves EfficientViT (MIT, 76 %), MobileViT v2 (66 %) "
    "or MobileViT (45 %): their published times are 2–4x what their op counts say, in every protocol. #32's "
    "goal (MAPE ≤ 10 %, Spearman ≥ 0.95, ≥ 70 % within ±10 %) stays far with any of them.")


def _with_features(names, fn):
    """Run fn with the fit and its predictions reading the feature names `names`."""
    shipped = F.FEATURES
    estimate.FEATURES = published.FEATURES = tuple(names)
    try:
        return fn()
    finally:
        estimate.FEATURES = published.FEATURES = shipped


def _fit_predict(train, test, features) -> list[tuple]:
    """(row, estimate) for the `test` rows, by a fit on the `train` rows."""
    _, x, y = published.design(train, features)
    model = estimate.fit(x, y, [r.source for r in train], **FIT_V1)
    return [(r, model.network_ms(features[r.model, r.resolution], r.source)) for r in test if r.source in model.scales]


def _score(pairs) -> float:
    """What the nested choice minimises: the median |log(estimate / published)| (robust to the
    rows a protocol ran off the Neural Engine, which no candidate sees)."""
    return float(np.median([abs(math.log(p / r.ms)) for r, p in pairs])) if pairs else math.inf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-nested", action="store_true", help="skip the nested choice (the slow part)")
    args = ap.parse_args(argv)
    rows = published.calibration_rows()
    recorded = {}
    for key in dict.fromkeys((r.model, r.resolution) for r in rows):
        try:
            recorded[key] = _records(*key)
        except Exception:  # noqa: BLE001 - as lut.published.calibration_features: a model that cannot be built is left out
            continue
    rows = [r for r in rows if (r.model, r.resolution) in recorded]
    feats = {name: {k: featurize(rec, w, **opts) for k, (rec, w) in recorded.items()} for name, opts in CANDIDATES.items()}

    def lofo(name, rows_=rows):
        names = list(next(iter(feats[name].values())))
        return _with_features(names, lambda: published.leave_family_out(rows_, feats[name], **FIT_V1))

    lines = [f"# Features for the Apple estimate, judged by leave-family-out ({datetime.date.today()})", "",
             "    python experiments/apple_estimate/features_trial.py", "",
             " ".join(__doc__.split("\n\n")[1].split()), "", f"{len(rows)} published rows, "
             f"{len({published.architecture_family(r.model) for r in rows})} architecture families.", "",
             "| features | MAPE % | median APE % | within ±5 % | within ±10 % | Spearman | A14 iOS16 rows (iphone12): "
             "MAPE %, median %, ±10 %, Spearman | A15 iFormer rows (iphone13): MAPE %, median %, ±10 %, Spearman |",
             "|---|---|---|---|---|---|---|---|"]
    per_family: dict[str, dict] = {}

    def line(label, pairs):
        s = published.error_summary(pairs, by=lambda r: "all")["all"]
        by_src = published.error_summary(pairs)
        cells = [f"{by_src[src]['mape_pct']:.1f}, {by_src[src]['median_ape_pct']:.1f}, "
                 f"{by_src[src]['within_10_pct']:.0f} %, {by_src[src]['spearman']:.3f}"
                 for src in ("A14 iOS16 ModelBench", "A15 iFormer")]
        lines.append(f"| {label} | {s['mape_pct']:.1f} | {s['median_ape_pct']:.1f} | {s['within_5_pct']:.0f} | "
                     f"{s['within_10_pct']:.0f} | {s['spearman']:.3f} | {cells[0]} | {cells[1]} |")
        per_family[label] = published.error_summary(pairs, by=lambda r: published.architecture_family(r.model))
        print(lines[-1], flush=True)

    for name in CANDIDATES:
        line(name, lofo(name))
    if not args.no_nested:
        nested = []
        families = sorted({published.architecture_family(r.model) for r in rows})
        for i, fam in enumerate(families):
            train = [r for r in rows if published.architecture_family(r.model) != fam]
            best = min(CANDIDATES, key=lambda name: _score(lofo(name, train)))
            nested += _with_features(list(next(iter(feats[best].values()))),
                                     lambda: _fit_predict(train, [r for r in rows if r not in train], feats[best]))
            print(f"nested {i + 1}/{len(families)}: {fam} -> {best}", flush=True)
        line("nested choice (per family left out, chosen on the others)", nested)
    lines += ["", CONCLUSION, "", "Per family left out, median APE % (shipped → each candidate):", "",
              "| family | rows | " + " | ".join(per_family) + " |", "|---|---|" + "---|" * len(per_family)]
    shipped = next(iter(per_family))
    for fam in sorted(per_family[shipped], key=lambda f: -per_family[shipped][f]["rows"]):
        lines.append(f"| {fam} | {per_family[shipped][fam]['rows']} | "
                     + " | ".join(f"{per_family[c][fam]['median_ape_pct']:.0f}" for c in per_family) + " |")
    io.write_text(HERE / "features_trial.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
