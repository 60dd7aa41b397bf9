"""Estimated Core ML latency for Apple devices we cannot reach.

An op's (or a network's) latency is predicted from features read off its aten ops, which are
additive, so the estimate of a network equals the sum of the estimates of its LUT ops:

    ms = scale_source * sum_j w_j * x_j   (+ overhead_source once per network call)

with x_j the features below (MACs of weight convs/linears, MACs of activation x activation
matmuls, bytes moved by depthwise convs, elementwise ops, transcendental activations,
LayerNorm/GroupNorm, softmax, layout changes (permute/transpose/concat/pad) and pooling,
weight bytes, and the number of compute ops). BatchNorm is free: Core ML folds it into the
conv before it.

The weights ``w`` (non-negative; one shared by the ops the Neural Engine streams, each weight conv's
at least the chip's peak: `STREAMED`, `COMPUTE_FLOOR`) are fitted on published on-device latencies
(``lut/calibration/published_latency.csv``: latencies the papers publish), each model rebuilt with
``timm.create_model(..., pretrained=False)`` (or our own published variants) and profiled on the
``meta`` device, so profiling costs no compute. Sources differ in phone, iOS/Core ML stack and
harness, so each source gets its own scale and per-call overhead (the README's protocol
caveats); the reference source, Apple's iOS 16 ModelBench numbers on the A14 (FastViT and
MobileOne papers and READMEs), has scale 1. The fit minimises relative error with Cauchy
weights on the log-ratio, so the rows where a model evidently fell off the Neural Engine
(ConvNeXt-T at 68 ms next to ResNet-101 at 3.5 ms) cannot drag the fit.

A device maps to the source whose protocol it reproduces: ``iphone12`` (A14) to the iOS 16
A14 source, ``iphone13`` (A15) to iFormer's iPhone 13 tables.

Three modules: `lut.features` reads the features, this one holds the cost model (fit, apply to a
table's ops), `lut.published` the published rows it is fitted on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from lut.devices import BUILTIN
from lut.features import FEATURES, profile
from nas.core import io
from supernets.registry import OpNode

MODEL_VERSION = "coreml-cost-v2"
SHIPPED_MODEL = Path(__file__).resolve().parent / "tables" / "coreml_cost_model.yaml"

# Which source's protocol each Apple device reproduces (see the module docstring): declared by
# the device (`Device.estimated_as`)
DEVICE_SOURCE = {d.name: d.estimated_as for d in BUILTIN.values() if d.estimated_as}
REFERENCE_SOURCE = "A14 iOS16 ModelBench"


# ---------------------------------------------------------------------------- the model
@dataclass
class CostModel:
    """Fitted weights (ms per unit of each feature at the reference source's speed) and, per
    source, the scale and the per-call overhead in ms."""

    weights: dict[str, float]
    scales: dict[str, float]
    overheads: dict[str, float]
    version: str = MODEL_VERSION
    fitted_on: dict = field(default_factory=dict)
    # "model@resolution" -> the features the fit saw: the model can be refitted (or judged, left
    # out by family) without profiling 134 models again, and a test can check that today's
    # profiler still computes them
    profiled: dict[str, dict[str, float]] = field(default_factory=dict)
    # the error bar of an estimate: quantiles of published / estimated over the calibration rows,
    # each predicted by a fit that never saw its architecture family (`lut.published.error_ratios`);
    # "seen_by_source": the same for a model whose architecture the calibration holds, each row
    # predicted by a fit without its model, with its family's factor
    heldout: dict = field(default_factory=dict)
    # architecture family -> source -> how much slower than the op counts say the family's
    # published models run (`lut.published.family_factors`); a family not in it runs as priced
    families: dict[str, dict[str, float]] = field(default_factory=dict)
    # source -> ms per MB of SiLU/HardSwish at that source's speed, where its published rows hold
    # them (`lut.published.swish_prices`): not priced (the estimate charges them as any activation),
    # reported beside an estimate (`swish_note`)
    swish_ms_per_mb: dict[str, float] = field(default_factory=dict)

    def op_ms(self, features: Mapping[str, float], source: str) -> float:
        """One op of a network: no per-call overhead."""
        return self.scales[source] * sum(self.weights[k] * features[k] for k in FEATURES)

    def family_factor(self, family: str | None, source: str) -> float:
        return self.families.get(family, {}).get(source, 1.0) if family else 1.0

    def network_ms(self, features: Mapping[str, float], source: str, family: str | None = None) -> float:
        """A whole network; `family`: its architecture family, whose factor it is priced with if the
        calibration holds the family (`families`)."""
        return (self.op_ms(features, source) + self.overheads[source]) * self.family_factor(family, source)

    def breakdown(self, features: Mapping[str, float], source: str) -> list[tuple[str, float]]:
        """Where a network's estimated milliseconds go: (feature, ms) for every feature that
        costs time, largest first; with the per-call overhead they add up to `network_ms`."""
        parts = ((k, self.scales[source] * self.weights[k] * features[k]) for k in FEATURES)
        return sorted(((k, ms) for k, ms in parts if ms > 0), key=lambda kv: -kv[1])

    def swish_cost(self, features: Mapping[str, float], source: str) -> tuple[float, float, float] | None:
        """(MB, ms charged, ms at `source`'s own price) of the SiLU/HardSwish in `features`; None where
        there are none or `source`'s published rows do not price them."""
        mb, rate = features.get("swish_mb", 0.0), self.swish_ms_per_mb.get(source)
        if mb <= 0 or rate is None:
            return None
        return mb, self.scales[source] * self.weights["activation_mb"] * mb, rate * mb

    def swish_note(self, features: Mapping[str, float], source: str) -> str | None:
        """`swish_cost` as a line: what the estimate charges and what the protocol's rows say."""
        cost = self.swish_cost(features, source)
        if cost is None:
            return None
        mb, charged, priced = cost
        return (f"SiLU/HardSwish: {mb:.1f} MB, charged as any activation ({charged:.3f} ms); this protocol's published "
                f"rows price them at {priced / charged:.1f}x that ({priced:.3f} ms, {priced - charged:+.3f}): their cost "
                "depends on the iOS stack (experiments/apple_estimate/activation_trial.md)")

    def to_dict(self) -> dict:
        r = lambda v: float(f"{v:.6g}")   # noqa: E731
        return {"version": self.version, "features": list(FEATURES),
                "weights": {k: r(v) for k, v in self.weights.items()},
                "scales": {k: r(v) for k, v in self.scales.items()},
                "overheads_ms": {k: r(v) for k, v in self.overheads.items()},
                "device_source": dict(DEVICE_SOURCE), "fitted_on": self.fitted_on, "heldout": self.heldout,
                "families": {f: {k: r(v) for k, v in by.items()} for f, by in self.families.items()},
                "swish_ms_per_mb": {k: r(v) for k, v in self.swish_ms_per_mb.items()},
                "profiled": self.profiled}

    @classmethod
    def from_dict(cls, raw: Mapping) -> CostModel:
        if raw.get("version") != MODEL_VERSION or list(raw.get("features", [])) != list(FEATURES):
            raise ValueError(f"cost model {raw.get('version')!r} is not {MODEL_VERSION}; refit it with "
                             "`nas lut estimate --refit`")
        return cls({k: float(v) for k, v in raw["weights"].items()}, {k: float(v) for k, v in raw["scales"].items()},
                   {k: float(v) for k, v in raw["overheads_ms"].items()}, raw["version"], dict(raw.get("fitted_on", {})),
                   {k: {f: float(v) for f, v in fs.items()} for k, fs in (raw.get("profiled") or {}).items()},
                   dict(raw.get("heldout") or {}),
                   {f: {k: float(v) for k, v in by.items()} for f, by in (raw.get("families") or {}).items()},
                   {k: float(v) for k, v in (raw.get("swish_ms_per_mb") or {}).items()})

    def profiled_features(self) -> dict[tuple[str, int], dict[str, float]]:
        """`profiled` keyed as `calibration_features` keys it: (model, resolution)."""
        return {(key.rsplit("@", 1)[0], int(key.rsplit("@", 1)[1])): feats for key, feats in self.profiled.items()}

    def save(self, path: Path = SHIPPED_MODEL) -> Path:
        return io.write_yaml(path, self.to_dict())

    @classmethod
    def load(cls, path: Path = SHIPPED_MODEL) -> CostModel:
        return cls.from_dict(io.read_yaml(path))


def _cauchy(log_ratio: np.ndarray, c: float = 0.3) -> np.ndarray:
    return 1.0 / (1.0 + (log_ratio / c) ** 2)


# Ops the Neural Engine runs as one streaming pass over their tensors (depthwise convs, elementwise
# ops, activations, norms, pooling) cost the MB they move at one rate, whatever their kind: fitted
# a rate per kind, each rate was set by the one or two architectures that move the most bytes
# through it (EfficientNet's squeeze-excitation pools set pool_mb's, PoolFormer's norms norm_mb's)
# and priced an architecture the fit never saw by another's quirk: left out, PoolFormer was
# estimated at twice its published times, FastViT 35 % slow (experiments/apple_estimate/fit_trial.md).
# Softmax and layout changes keep rates of their own: the Neural Engine runs them as reductions
# along the last axis and as copies into another layout, not as one pass.
STREAMED = ("depthwise_mb", "elementwise_mb", "activation_mb", "norm_mb", "pool_mb")
# No matmul runs faster than the A14 Neural Engine's peak, Apple's 11 TOPS (5.5e12 MAC/s): 0.182 ms
# per GMAC at the reference source's speed, for weight convs/linears and attention's matmuls alike.
# Without the floor the fit priced weight MACs below it and charged their time to weight bytes,
# which a MAC-heavy unseen model does not have.
COMPUTE_FLOOR = {"dense_gmacs": 1e3 / 5.5e3, "attention_gmacs": 1e3 / 5.5e3}


def fit(x: np.ndarray, y: np.ndarray, sources: list[str], *, streamed: tuple[str, ...] = STREAMED,
        floors: Mapping[str, float] = COMPUTE_FLOOR, iterations: int = 60,
        columns: tuple[str, ...] | None = None) -> CostModel:
    """Fit weights, per-source scales and overheads on rows x (features, columns in `FEATURES`'
    order, or `columns`' if given) -> y (ms).

    The `streamed` features share one weight and each of `floors` is at least its floor (the
    comments above; `streamed=()`, `floors={}` fit every weight freely, as coreml-cost-v1 did).
    Alternates (1) non-negative least squares on relative error of the weights and all overheads
    together, the scales fixed, and (2) per source, scale and overhead (both >= 0) with the
    weights fixed; the reference source's scale stays 1 (it fixes the unit). Rows are re-weighted
    every iteration by a Cauchy function of their log-ratio error (robust to off-Neural-Engine
    outliers)."""
    from scipy.optimize import nnls

    names = sorted(set(sources))
    src = np.array([names.index(s) for s in sources])
    onehot = np.eye(len(names))[src]
    ref = names.index(REFERENCE_SOURCE if REFERENCE_SOURCE in names else names[0])
    features = list(columns or FEATURES)
    tied = [j for j, k in enumerate(features) if k in streamed]
    groups = [[j] for j in range(len(features)) if j not in tied] + ([tied] if tied else [])
    z = np.stack([x[:, g].sum(axis=1) for g in groups], axis=1)     # one column per free weight
    floor = np.array([floors.get(k, 0.0) for k in features])
    floor_ms = x @ floor                                              # what the floors charge, at scale 1
    colnorm = np.maximum(z.max(axis=0), 1e-12)   # conditioning: features span 1e-3 .. 1e3
    zs = z / colnorm
    scale = np.ones(len(names))
    over = np.zeros(len(names))
    robust = np.ones(len(y))
    v = np.zeros(len(groups))
    for _ in range(iterations):
        r = np.sqrt(robust) / y
        coef, _ = nnls(np.hstack([zs * scale[src][:, None], onehot]) * r[:, None], (y - scale[src] * floor_ms) * r,
                       maxiter=100 * len(groups))
        v, over = coef[:len(groups)], coef[len(groups):]
        u = zs @ v + floor_ms
        for k in range(len(names)):
            if k != ref:
                m = src == k
                sk, _ = nnls(np.stack([u[m], np.ones(m.sum())], axis=1) * r[m][:, None], y[m] * r[m])
                scale[k], over[k] = max(sk[0], 1e-6), sk[1]
        pred = scale[src] * u + over[src]
        robust = _cauchy(np.log(np.maximum(pred, 1e-9) / y))
    w = floor.copy()
    for g, vg, norm in zip(groups, v, colnorm):
        w[g] += vg / norm
    return CostModel(dict(zip(features, w.tolist())), dict(zip(names, scale.tolist())), dict(zip(names, over.tolist())))


# ---------------------------------------------------------------------------- tables
def cost_model_path(tables_dir: str | Path | None) -> Path:
    """The user's refitted cost model if there is one, else the shipped one."""
    user = Path(tables_dir) / SHIPPED_MODEL.name if tables_dir is not None else None
    return user if user is not None and user.is_file() else SHIPPED_MODEL


def estimate_ops(table, ops: Mapping[str, OpNode], model: CostModel, source: str,
                 progress: Callable[[int], None] | None = None, *, redo: bool = False) -> int:
    """Add an estimated entry for every op of `ops` the table lacks (with `redo`, also re-estimate
    its estimated entries; measured ones always win). Returns how many were written."""
    from lut import graph

    added = 0
    for key, op in ops.items():
        if key not in table or (redo and table.entries[key].get("source") == "estimated"):
            feats = profile(graph.deploy_module(op), tuple(op.in_shape))
            table.add(key, model.op_ms(feats, source), source="estimated", model=model.version,
                      macs=int(round((feats["dense_gmacs"] + feats["attention_gmacs"]) * 1e9)))
            added += 1
        if progress:
            progress(1)
    return added


def describe_table(table, model: CostModel, source: str) -> None:
    """Record in the table's environment how its estimates were made."""
    table.environment.update({
        "estimated_by": model.version, "estimate_source": source, "overhead_ms": round(model.overheads[source], 6),
        "estimate_calibration": {"rows": model.fitted_on.get("rows"), "models": model.fitted_on.get("models"),
                        "data": model.fitted_on.get("data"),
                        "in_sample_median_ape_pct": model.fitted_on.get("in_sample_median_ape_pct")},
        "estimate_error": ({"method": model.heldout["method"], "source": source, **model.heldout["by_source"][source]}
                           if source in (model.heldout or {}).get("by_source", {}) else {}),
    })
