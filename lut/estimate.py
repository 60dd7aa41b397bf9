"""Estimated Core ML latency for Apple devices we cannot reach.

An op's (or a network's) latency is predicted from features read off its aten ops, which are
additive, so the estimate of a network equals the sum of the estimates of its LUT ops:

    ms = scale_source * sum_j w_j * x_j   (+ overhead_source once per network call)

with x_j the features below (MACs of weight convs/linears, MACs of activation x activation
matmuls, bytes moved by depthwise convs, elementwise ops, transcendental activations,
LayerNorm/GroupNorm, softmax, layout changes (permute/transpose/concat/pad) and pooling,
weight bytes, and the number of compute ops). BatchNorm is free: Core ML folds it into the
conv before it.

The weights ``w`` (non-negative) are fitted on published on-device latencies
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
"""
from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from lut.devices import BUILTIN
from supernets import io
from supernets.registry import OpNode

MODEL_VERSION = "coreml-cost-v1"
CALIBRATION_CSV = Path(__file__).resolve().parent / "calibration" / "published_latency.csv"
SHIPPED_MODEL = Path(__file__).resolve().parent / "tables" / "coreml_cost_model.yaml"
BYTES_PER_ELEMENT = 2   # the Neural Engine computes in float16

FEATURES = ("dense_gmacs", "attention_gmacs", "depthwise_mb", "elementwise_mb", "activation_mb", "norm_mb",
            "softmax_mb", "layout_mb", "pool_mb", "weight_mb", "ops")

# Which source's protocol each Apple device reproduces (see the module docstring): declared by
# the device (`Device.estimated_as`)
DEVICE_SOURCE = {d.name: d.estimated_as for d in BUILTIN.values() if d.estimated_as}
REFERENCE_SOURCE = "A14 iOS16 ModelBench"


def source_of(row: Mapping[str, str]) -> str | None:
    """The protocol group of a published row (None: not an Apple phone)."""
    device, src = row["device"], row["source"]
    if device == "iPhone 12":
        return "A14 EfficientFormer preprint"      # pre-iOS 16 stack: its own factor (README caveat)
    if device == "iPhone 12 Pro":
        return REFERENCE_SOURCE                     # FastViT paper + ml-fastvit/ml-mobileone READMEs
    if device == "iPhone 13":
        return "A15 iFormer" if src.startswith("iFormer") else "A15 FMViT (iOS 16.6)"
    return None


# ---------------------------------------------------------------------------- profiling
_VIEWS = {"view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "unsqueeze", "squeeze",
          "slice", "select", "split", "split_with_sizes", "unbind", "alias", "detach", "as_strided", "flatten",
          "chunk", "narrow", "unflatten", "lift_fresh", "_to_copy", "clone", "contiguous", "copy_"}
_LAYOUT = {"permute", "transpose", "t", "cat", "stack", "roll", "constant_pad_nd", "im2col", "col2im",
           "pixel_shuffle", "pixel_unshuffle", "clone", "contiguous", "repeat", "index_select", "gather"}
_ELEMENTWISE = {"add", "sub", "mul", "div", "relu", "relu_", "clamp", "clamp_min", "clamp_max", "hardtanh",
                "neg", "pow", "sqrt", "rsqrt", "where", "maximum", "minimum", "abs", "add_", "mul_", "reciprocal",
                "leaky_relu", "threshold", "fill_", "zero_", "copy", "masked_fill", "_native_batch_norm_legit"}
_ACTIVATION = {"gelu", "silu", "sigmoid", "hardswish", "hardsigmoid", "tanh", "mish", "erf", "exp", "log",
               "elu", "softplus", "gelu_", "silu_", "hardswish_", "sigmoid_", "hardsigmoid_"}
_NORM = {"native_layer_norm", "layer_norm", "native_group_norm", "group_norm"}
_SOFTMAX = {"_softmax", "softmax", "_log_softmax", "log_softmax"}
_POOL = {"avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool2d", "_adaptive_avg_pool2d",
         "mean", "sum", "amax", "adaptive_max_pool2d", "avg_pool1d", "max_pool1d"}
_MATMUL = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear"}



def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _mb(tensors: Iterable[torch.Tensor]) -> float:
    return sum(t.numel() for t in tensors) * BYTES_PER_ELEMENT / 1e6


class _Profiler(TorchDispatchMode):
    """Adds each aten op's features to ``self.features``. Tensors derived from parameters by
    views (``linear``'s transposed weight) stay parameters, so a matmul with a weight counts as a
    dense layer and one between two activations as attention."""

    def __init__(self, params: Iterable[torch.Tensor]):
        super().__init__()
        self.features = dict.fromkeys(FEATURES, 0.0)
        self._weights = {id(p) for p in params}
        self._keep: list[torch.Tensor] = []   # keeps ids of derived weights from being reused

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        ins = _tensors((args, kwargs))
        outs = _tensors(out)
        from_weight = any(id(t) in self._weights for t in ins)
        if from_weight and name in _VIEWS:
            for t in outs:
                self._weights.add(id(t))
                self._keep.append(t)
            return out
        acts = [t for t in ins if id(t) not in self._weights]
        f = self.features
        counted = True
        if name == "convolution":
            x, w, groups = args[0], args[1], args[8]
            if groups > 1 and groups == x.shape[1] and w.shape[1] == 1:
                f["depthwise_mb"] += _mb([x, *outs])
            else:
                f["dense_gmacs"] += flop_registry[func.overloadpacket](*args, **kwargs, out_val=out) / 2e9
        elif name in _MATMUL:
            macs = flop_registry[func.overloadpacket](*args, **kwargs, out_val=out) / 2e9 \
                if func.overloadpacket in flop_registry else 0.0
            f["dense_gmacs" if from_weight else "attention_gmacs"] += macs
        elif name in _SOFTMAX:
            f["softmax_mb"] += _mb(acts + outs)
        elif name in _NORM:
            f["norm_mb"] += _mb(acts[:1] + outs[:1])
        elif name in _ACTIVATION:
            f["activation_mb"] += _mb(acts + outs)
        elif name in _POOL:
            f["pool_mb"] += _mb(acts + outs)
        elif name in _LAYOUT:
            f["layout_mb"] += _mb(outs)
        elif name in _ELEMENTWISE:
            f["elementwise_mb"] += _mb(acts + outs)
        else:
            counted = False   # views and bookkeeping: free
        if counted:
            f["ops"] += 1
        return out


def profile(module: torch.nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """Features of one forward pass of a deploy-form module at `input_shape` (batch 1).

    Runs on the ``meta`` device (shapes only) when every op supports it, else on the CPU."""
    module = module.eval()
    weight_mb = sum(p.numel() for p in module.parameters()) * BYTES_PER_ELEMENT / 1e6
    for device in ("meta", "cpu"):
        try:
            m = module.to(device)
            with torch.no_grad(), _Profiler(list(m.parameters()) + list(m.buffers())) as prof:
                m(torch.zeros(input_shape, device=device))
            break
        except (NotImplementedError, RuntimeError):
            if device == "cpu":
                raise
            module = module.to_empty(device="cpu")   # the values were lost on meta; features need shapes only
    prof.features["weight_mb"] = weight_mb
    return prof.features


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

    def op_ms(self, features: Mapping[str, float], source: str) -> float:
        """One op of a network: no per-call overhead."""
        return self.scales[source] * sum(self.weights[k] * features[k] for k in FEATURES)

    def network_ms(self, features: Mapping[str, float], source: str) -> float:
        return self.op_ms(features, source) + self.overheads[source]

    def to_dict(self) -> dict:
        r = lambda v: float(f"{v:.6g}")   # noqa: E731
        return {"version": self.version, "features": list(FEATURES),
                "weights": {k: r(v) for k, v in self.weights.items()},
                "scales": {k: r(v) for k, v in self.scales.items()},
                "overheads_ms": {k: r(v) for k, v in self.overheads.items()},
                "device_source": dict(DEVICE_SOURCE), "fitted_on": self.fitted_on, "profiled": self.profiled}

    @classmethod
    def from_dict(cls, raw: Mapping) -> CostModel:
        if raw.get("version") != MODEL_VERSION or list(raw.get("features", [])) != list(FEATURES):
            raise ValueError(f"cost model {raw.get('version')!r} is not {MODEL_VERSION}; refit it with "
                             "`nas lut estimate --refit`")
        return cls({k: float(v) for k, v in raw["weights"].items()}, {k: float(v) for k, v in raw["scales"].items()},
                   {k: float(v) for k, v in raw["overheads_ms"].items()}, raw["version"], dict(raw.get("fitted_on", {})),
                   {k: {f: float(v) for f, v in fs.items()} for k, fs in (raw.get("profiled") or {}).items()})

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


def fit(x: np.ndarray, y: np.ndarray, sources: list[str], *, iterations: int = 60) -> CostModel:
    """Fit weights, per-source scales and overheads on rows x (features) -> y (ms).

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
    scale = np.ones(len(names))
    over = np.zeros(len(names))
    robust = np.ones(len(y))
    colnorm = np.maximum(x.max(axis=0), 1e-12)   # conditioning: features span 1e-3 .. 1e3
    xs = x / colnorm
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        r = np.sqrt(robust) / y
        coef, _ = nnls(np.hstack([xs * scale[src][:, None], onehot]) * r[:, None], y * r, maxiter=100 * x.shape[1])
        w, over = coef[:x.shape[1]], coef[x.shape[1]:]
        u = xs @ w
        for k in range(len(names)):
            if k != ref:
                m = src == k
                sk, _ = nnls(np.stack([u[m], np.ones(m.sum())], axis=1) * r[m][:, None], y[m] * r[m])
                scale[k], over[k] = max(sk[0], 1e-6), sk[1]
        pred = scale[src] * u + over[src]
        robust = _cauchy(np.log(np.maximum(pred, 1e-9) / y))
    weights = dict(zip(FEATURES, (w / colnorm).tolist()))
    return CostModel(weights, dict(zip(names, scale.tolist())), dict(zip(names, over.tolist())))


# ---------------------------------------------------------------------------- calibration data
# Published name -> model name (timm, or our own ``nas_<family>_<variant>``). Rows of models
# timm does not have, and tagged rows that must not be pooled with the plain model (backbones
# at 512 px / 1344x800, modified ConvNeXts, GELU variants), are left out.
TIMM_NAMES = {
    "MobileNetV1-1.0": "mobilenetv1_100", "MobileNetV2-1.0": "mobilenetv2_100", "MobileNetV2-1.4": "mobilenetv2_140",
    "MobileNetV3-L-0.75": "mobilenetv3_large_075", "MobileNetV3-L-1.0": "mobilenetv3_large_100",
    "MobileNetV3-S-1.0": "mobilenetv3_small_100", "MNv4-Conv-S": "mobilenetv4_conv_small",
    "MNv4-Conv-M": "mobilenetv4_conv_medium", "MNv4-Hybrid-M": "mobilenetv4_hybrid_medium",
    "ResNet-50": "resnet50", "RSB-ResNet50": "resnet50", "ResNet-101": "resnet101", "ResNet-152": "resnet152",
    "RSB-ResNet152": "resnet152", "ResNeXt50-32x4d": "resnext50_32x4d", "ResNeXt101-32x4d": "resnext101_32x4d",
    "ResNeSt50": "resnest50d", "ResNeSt101": "resnest101e", "RegNetY-8G": "regnety_080", "RegNetY-16G": "regnety_160",
    "EfficientNet-B0": "efficientnet_b0", "EfficientNet-B1": "efficientnet_b1", "EfficientNet-B2": "efficientnet_b2",
    "EfficientNet-B3": "efficientnet_b3", "EfficientNet-B5": "efficientnet_b5", "EfficientNet-B6": "tf_efficientnet_b6",
    "EfficientNet-B7": "tf_efficientnet_b7", "EfficientNetV2-S": "efficientnetv2_s",
    "DeiT-T": "deit_tiny_patch16_224", "DeiT-S": "deit_small_patch16_224", "DeiT-B": "deit_base_patch16_224",
    "DeiT-S [distilled, DeiT recipe]": "deit_small_distilled_patch16_224",
    "DeiT-B [distilled, DeiT recipe]": "deit_base_distilled_patch16_224",
    "PoolFormer-S12": "poolformer_s12", "PoolFormer-S24": "poolformer_s24", "PoolFormer-S36": "poolformer_s36",
    "PoolFormer-M36": "poolformer_m36", "PoolFormer-M48": "poolformer_m48", "ResMLP-S24": "resmlp_24_224",
    "ConvMixer-768": "convmixer_768_32", "LeViT-256 [original HardSwish]": "levit_256",
    "MobileViT-XXS": "mobilevit_xxs", "MobileViT-XS": "mobilevit_xs", "MobileViT-S": "mobilevit_s",
    "MobileViTv2-0.5": "mobilevitv2_050", "MobileViTv2-1.0": "mobilevitv2_100", "MobileViTv2-2.0": "mobilevitv2_200",
    "EfficientFormer-L1": "efficientformer_l1", "EfficientFormer-L3": "efficientformer_l3",
    "EfficientFormer-L7": "efficientformer_l7",
    "EfficientFormer-L1 [named EfficientViT-L1 in draft]": "efficientformer_l1",
    "EfficientFormer-L3 [named EfficientViT-L3 in draft]": "efficientformer_l3",
    "EfficientFormer-L7 [named EfficientViT-L7 in draft]": "efficientformer_l7",
    "EfficientFormerV2-S0": "efficientformerv2_s0", "EfficientFormerV2-S1": "efficientformerv2_s1",
    "EfficientFormerV2-S2": "efficientformerv2_s2", "EfficientFormerV2-L": "efficientformerv2_l",
    "MobileOne-S0": "mobileone_s0", "MobileOne-S1": "mobileone_s1", "MobileOne-S2": "mobileone_s2",
    "MobileOne-S3": "mobileone_s3", "MobileOne-S4": "mobileone_s4",
    "FastViT-T8": "fastvit_t8", "FastViT-T12": "fastvit_t12", "FastViT-S12": "fastvit_s12",
    "FastViT-SA12": "fastvit_sa12", "FastViT-SA24": "fastvit_sa24", "FastViT-SA36": "fastvit_sa36",
    "FastViT-MA36": "fastvit_ma36", "Swin-T": "swin_tiny_patch4_window7_224",
    "Swin-S": "swin_small_patch4_window7_224", "Swin-B": "swin_base_patch4_window7_224",
    "CoAtNet-0": "coatnet_0_224", "CoAtNet-1": "coatnet_1_224", "CoAtNet-2": "coatnet_2_224",
    "MaxViT-T": "maxvit_tiny_tf_224", "MaxViT-S": "maxvit_small_tf_224", "NFNet-F0": "dm_nfnet_f0",
    "NFNet-F1": "dm_nfnet_f1", "ConvNeXt-T": "convnext_tiny", "ConvNeXt-S": "convnext_small",
    "ConvNeXt-B": "convnext_base", "RepVGG-A0": "repvgg_a0", "RepVGG-A2": "repvgg_a2", "RepVGG-B1": "repvgg_b1",
    "RepViT-M1.0": "repvit_m1_0", "RepViT-M1.1": "repvit_m1_1", "RepViT-M1.5": "repvit_m1_5",
    "FasterNet-T0": "fasternet_t0", "FasterNet-T1": "fasternet_t1", "FasterNet-T2": "fasternet_t2",
    "FasterNet-S": "fasternet_s", "FasterNet-M": "fasternet_m", "Next-ViT-S": "nextvit_small",
    "Next-ViT-B": "nextvit_base", "EfficientViT-B1 (MIT)": "efficientvit_b1", "EfficientViT-B2 (MIT)": "efficientvit_b2",
    "GhostNetV3-1.0x": "ghostnetv3_100", "GhostNetV3-1.3x": "ghostnetv3_130", "GhostNetV3-1.6x": "ghostnetv3_160",
    "SwiftFormer-XS": "swiftformer_xs", "SwiftFormer-S": "swiftformer_s", "SwiftFormer-L1": "swiftformer_l1",
    "SHViT-S1": "shvit_s1", "SHViT-S2": "shvit_s2", "SHViT-S4": "shvit_s4",
    "iFormer-T": "nas_iformer_t", "iFormer-S": "nas_iformer_s", "iFormer-M": "nas_iformer_m",
    "iFormer-L": "nas_iformer_l", "iFormer-L2": "nas_iformer_l2",
    "FMViT-T": "nas_fmvit_t", "FMViT-S": "nas_fmvit_s", "FMViT-M": "nas_fmvit_m", "FMViT-B": "nas_fmvit_b",
    "FMViT-L": "nas_fmvit_l",
}


@dataclass(frozen=True)
class Row:
    published: str      # the name in the CSV
    model: str          # timm / nas name
    source: str
    resolution: int
    ms: float


def calibration_rows(path: Path = CALIBRATION_CSV) -> list[Row]:
    """The Apple-phone rows of the published table that map to a buildable model."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        src = source_of(r)
        if src is None or r["model"] not in TIMM_NAMES or not r["latency_ms"]:
            continue
        res = r["resolution"].strip()
        out.append(Row(r["model"], TIMM_NAMES[r["model"]], src, int(res) if res.isdigit() else 0, float(r["latency_ms"])))
    return out


def build_model(name: str, resolution: int | None = None) -> tuple[torch.nn.Module, int]:
    """A deploy-form model and the resolution it runs at (its default if `resolution` is 0/None)."""
    import timm
    from timm.layers import set_fused_attn

    from supernets.layers import reparameterize
    from supernets.registry import family_names, get_family

    for family in family_names():   # registers nas_<family>_<variant> with timm
        get_family(family)

    set_fused_attn(False)   # plain matmul + softmax, as Core ML runs attention

    def build(device: str) -> tuple[torch.nn.Module, int]:
        with torch.device(device):
            model = timm.create_model(name, pretrained=False)
            native = int((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1])
            res = resolution or native
            if res != native and _fixed_size(model):
                model = timm.create_model(name, pretrained=False, img_size=res)
            if name.startswith("nas_"):
                model = reparameterize(model)
            else:
                from timm.utils.model import reparameterize_model
                model = reparameterize_model(model.eval())
        return model.eval(), res

    # The features need shapes only: on the meta device a model is built without initialising
    # its weights and its conv-BN folding is free (the 134 calibration models: the same features
    # as built on the CPU, in a fraction of the time). A model that cannot be built there is
    # built on the CPU.
    try:
        return build("meta")
    except (NotImplementedError, RuntimeError):
        return build("cpu")


def _fixed_size(model: torch.nn.Module) -> bool:
    """Does the model need ``img_size`` to run at another resolution (position embeddings,
    windows)?"""
    return any(hasattr(m, "img_size") or hasattr(m, "window_size") or hasattr(m, "pos_embed")
               for m in model.modules())


def model_features(name: str, resolution: int | None = None) -> tuple[dict[str, float], int]:
    model, res = build_model(name, resolution)
    return profile(model, (1, 3, res, res)), res


def calibration_features(rows: list[Row], progress: Callable[[int], None] | None = None) -> dict[tuple[str, int], dict]:
    """(model, resolution) -> features, each model built once per resolution. Models that fail to
    build or profile are reported and left out."""
    out: dict[tuple[str, int], dict] = {}
    for key in dict.fromkeys((r.model, r.resolution) for r in rows):
        try:
            out[key] = model_features(*key)[0]
        except Exception as e:  # noqa: BLE001 - a third-party model that cannot be built is skipped, not fatal
            out[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"}
        if progress:
            progress(1)
    return out


def design(rows: list[Row], features: Mapping[tuple[str, int], dict]) -> tuple[list[Row], np.ndarray, np.ndarray]:
    usable = [r for r in rows if "error" not in features[r.model, r.resolution]]
    x = np.array([[features[r.model, r.resolution][k] for k in FEATURES] for r in usable], dtype=float)
    return usable, x, np.array([r.ms for r in usable], dtype=float)


def fit_published(rows: list[Row], features: Mapping[tuple[str, int], dict]) -> CostModel:
    usable, x, y = design(rows, features)
    model = fit(x, y, [r.source for r in usable])
    pred = np.array([model.network_ms(dict(zip(FEATURES, xi)), r.source) for xi, r in zip(x, usable)])
    model.profiled = {f"{m}@{res}": {k: float(v) for k, v in features[m, res].items()}
                      for m, res in dict.fromkeys((r.model, r.resolution) for r in usable)}
    model.fitted_on = {"rows": len(usable), "models": len({r.model for r in usable}),
                       "sources": sorted({r.source for r in usable}), "data": CALIBRATION_CSV.name,
                       "in_sample_median_ape_pct": round(float(np.median(np.abs(pred / y - 1))) * 100, 2)}
    return model


def leave_one_model_out(rows: list[Row], features: Mapping[tuple[str, int], dict]) -> list[tuple[Row, float]]:
    """(row, prediction) with every model's rows predicted by a fit without that model."""
    usable, x, y = design(rows, features)
    sources = np.array([r.source for r in usable])
    out = []
    for model_name in dict.fromkeys(r.model for r in usable):
        held = np.array([r.model == model_name for r in usable])
        m = fit(x[~held], y[~held], list(sources[~held]))
        for i in np.flatnonzero(held):
            r = usable[i]
            if r.source in m.scales:
                out.append((r, m.network_ms(dict(zip(FEATURES, x[i])), r.source)))
    return out


def error_summary(pairs: list[tuple[Row, float]]) -> dict[str, dict]:
    """Per source: rows, MAPE, median APE, Spearman rank correlation of predicted vs published."""
    from scipy.stats import spearmanr

    out = {}
    for src in sorted({r.source for r, _ in pairs}):
        sel = [(r.ms, p) for r, p in pairs if r.source == src]
        ape = [abs(p / y - 1) * 100 for y, p in sel]
        rho = spearmanr([y for y, _ in sel], [p for _, p in sel]).statistic if len(sel) > 2 else math.nan
        out[src] = {"rows": len(sel), "mape_pct": statistics.mean(ape), "median_ape_pct": statistics.median(ape),
                    "spearman": float(rho)}
    return out


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
    })
