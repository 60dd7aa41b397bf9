"""The published on-device latencies the Apple cost model is fitted on
(``lut/calibration/published_latency.csv``), each row's model rebuilt (timm, or our own published
variants) and profiled: the rows, their features, the fit, and leave-one-model-out errors.
"""
from __future__ import annotations

import csv
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from lut.estimate import REFERENCE_SOURCE, CostModel, fit
from lut.features import FEATURES, profile

CALIBRATION_CSV = Path(__file__).resolve().parent / "calibration" / "published_latency.csv"
# The A14 on iOS 16 timed by Xcode 14's Core ML performance report (RepViT and EfficientFormerV2
# READMEs): the reference source's chip and stack, another harness and statistic, so its own scale
XCODE_SOURCE = "A14 iOS16 Xcode"
# A published "<name> [backbone]" row timed the network without its classifier (a detection or
# segmentation backbone, at 512 px): built as timm's ``features_only`` model, named `<timm name>` +
# BACKBONE so that its features are not the classifier's
BACKBONE = "[backbone]"


def source_of(row: Mapping[str, str]) -> str | None:
    """The protocol group of a published row (None: not an Apple phone)."""
    device, src = row["device"], row["source"]
    if device == "iPhone 12":
        if "Xcode 14" in row["os_or_tool"]:
            return XCODE_SOURCE                     # iOS 16 stack, Xcode's report: not ModelBench's app loop
        return "A14 EfficientFormer preprint"      # pre-iOS 16 stack: its own factor (README caveat)
    if device == "iPhone 12 Pro":
        return REFERENCE_SOURCE                     # FastViT paper + ml-fastvit/ml-mobileone READMEs
    if device == "iPhone 13":
        return "A15 iFormer" if src.startswith("iFormer") else "A15 FMViT (iOS 16.6)"
    return None


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
    "ConvMixer-768": "convmixer_768_32", "ResNet-18": "resnet18",
    "Twins-PCPVT-S": "twins_pcpvt_small", "PVTv2-B1": "pvt_v2_b1", "ResNeXt101-64x4d": "resnext101_64x4d", "LeViT-256 [original HardSwish]": "levit_256",
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
    "RepViT-M0.9": "repvit_m0_9", "RepViT-M1.0": "repvit_m1_0", "RepViT-M1.1": "repvit_m1_1",
    "RepViT-M1.5": "repvit_m1_5", "RepViT-M2.3": "repvit_m2_3", "RepViT-M3 [first release]": "repvit_m3",
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


def calibration_rows(path: Path = CALIBRATION_CSV, *, backbones: bool = False) -> list[Row]:
    """The Apple-phone rows of the published table that map to a buildable model; with
    `backbones`, also the detection/segmentation backbones timed at 512 px. The cost model is not
    fitted on those: fitted with them (their own scale or the classifiers'), it priced the
    classification rows of a family it never saw worse (experiments/apple_estimate/backbones.md),
    so they are a check of how far the estimate carries to dense-prediction sizes."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        src, res, name = source_of(r), r["resolution"].strip(), r["model"]
        backbone = name.endswith(" " + BACKBONE)
        base = name.removesuffix(" " + BACKBONE)
        if src is None or base not in TIMM_NAMES or not r["latency_ms"] or (backbone and not (backbones and res.isdigit())):
            continue   # not an Apple phone, a model we cannot build, or a backbone (at a non-square size)
        model = TIMM_NAMES[base] + (BACKBONE if backbone else "")
        out.append(Row(name, model, src, int(res) if res.isdigit() else 0, float(r["latency_ms"])))
    return out


def build_model(name: str, resolution: int | None = None) -> tuple[torch.nn.Module, int]:
    """A deploy-form model and the resolution it runs at (its default if `resolution` is 0/None);
    a name ending in `BACKBONE` builds the model's feature extractor (no classifier)."""
    import timm
    from timm.layers import set_fused_attn

    from supernets.layers import reparameterize
    from supernets.registry import family_names, get_family

    for family in family_names():   # registers nas_<family>_<variant> with timm
        get_family(family)

    set_fused_attn(False)   # plain matmul + softmax, as Core ML runs attention

    backbone = {"features_only": True} if name.endswith(BACKBONE) else {}
    name = name.removesuffix(BACKBONE)

    def build(device: str) -> tuple[torch.nn.Module, int]:
        with torch.device(device):
            model = timm.create_model(name, pretrained=False)
            native = int((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1])
            res = resolution or native
            if res != native and _fixed_size(model):
                model = timm.create_model(name, pretrained=False, img_size=res, **backbone)
            elif backbone:
                model = timm.create_model(name, pretrained=False, **backbone)
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
    model.families = family_factors(model, usable, features)
    model.swish_ms_per_mb = swish_prices(usable, features)
    model.heldout = {**error_ratios(leave_family_out(rows, features)),
                     "seen_by_source": error_ratios(leave_one_model_out(rows, features))["by_source"]}
    return model


def swish_prices(rows: list[Row], features: Mapping[tuple[str, int], dict]) -> dict[str, float]:
    """Per source whose rows hold SiLU/HardSwish: what they cost per MB at that source's speed, by
    the shipped fit with their MB taken out of activation_mb and given a weight per source.

    Reported beside an estimate, not charged (experiments/apple_estimate/activation_trial.md): one
    weight for every source priced the stacks that run them cheaply (iFormer's A15) 45-60 % slow,
    and a weight per source cannot price an unseen family where that family is its only Swish."""
    usable, x, y = design(rows, features)
    swish = np.array([features[r.model, r.resolution].get("swish_mb", 0.0) for r in usable])
    holding = sorted({r.source for r, mb in zip(usable, swish) if mb > 0})
    if not holding:
        return {}
    x[:, FEATURES.index("activation_mb")] -= swish
    per_source = np.stack([swish * np.array([r.source == s for r in usable]) for s in holding], axis=1)
    model = fit(np.hstack([x, per_source]), y, [r.source for r in usable],
                columns=(*FEATURES, *(f"swish_mb@{s}" for s in holding)))
    return {s: model.scales[s] * model.weights[f"swish_mb@{s}"] for s in holding}


# A family's factor is its published rows' mean log(published / estimate), shrunk toward 1 as if
# PRIOR_ROWS more rows had found none; per source, shrunk toward the family's mean over all sources
# by PRIOR_ROWS rows. A row's log ratio is clipped at +-FACTOR_CLIP: a model that fell off the
# Neural Engine in one paper's stack (20x) must not move its kin by more than 2x.
PRIOR_ROWS = 1.0
FACTOR_CLIP = math.log(2.0)


def family_factors(model: CostModel, rows: list[Row], features: Mapping[tuple[str, int], dict]) -> dict[str, dict[str, float]]:
    """Architecture family -> source -> factor (for every source of `model`): how much slower than
    their op counts the family's models ran in the published rows, the residual of a family the
    fit's shared weights cannot express (EfficientNet's squeeze-excitation at 300-600 px runs
    2-4x its estimate on the A14). A model of a family the rows hold is priced with it; one of a
    family they do not hold, with none."""
    by_family: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        f = features[r.model, r.resolution]
        if "error" in f or r.source not in model.scales:
            continue
        lr = max(-FACTOR_CLIP, min(FACTOR_CLIP, math.log(r.ms / model.network_ms(f, r.source))))
        by_family.setdefault(architecture_family(r.model), {}).setdefault(r.source, []).append(lr)
    out = {}
    for family, by_source in by_family.items():
        every = [v for vs in by_source.values() for v in vs]
        mean = sum(every) / (len(every) + PRIOR_ROWS)
        out[family] = {src: math.exp((sum(by_source.get(src, [])) + PRIOR_ROWS * mean) / (len(by_source.get(src, [])) + PRIOR_ROWS))
                       for src in model.scales}
    return out


# Sizes of one design that timm names as separate architectures (EfficientNetV2 keeps EfficientNet's
# MBConv + squeeze-excitation blocks): left out together, or the "unseen" family would be seen
_SAME_ARCHITECTURE = {"efficientnetv2": "efficientnet"}
# ... and two architectures timm names alike: MSRA's EfficientViT (``efficientvit_m0``..``m5``,
# cascaded group attention) is not MIT's (``efficientvit_b*``/``l*``, ReLU linear attention), and
# must not be priced with MIT's family factor
_DISTINCT_ARCHITECTURE = ((re.compile(r"efficientvit_m\d"), "efficientvit_msra"),)


def architecture_family(model: str) -> str:
    """The architecture a model is one size of: its timm name without the size and the weights'
    tag (``mobilevitv2_050`` -> ``mobilevitv2``, ``tf_efficientnet_b7`` -> ``efficientnet``,
    ``resnet101`` -> ``resnet``, ``nas_fmvit_s`` -> ``fmvit``). A version is its own architecture
    (MobileViT v1 and v2 attend differently), but for `_SAME_ARCHITECTURE`; one name stem can be two
    architectures (`_DISTINCT_ARCHITECTURE`)."""
    name = re.sub(r"^(tf_|dm_|nas_)", "", model)
    for pattern, family in _DISTINCT_ARCHITECTURE:
        if pattern.match(name):
            return family
    stem = re.match(r"[a-z]+?(?:v\d+)?(?=[_\d]|$)", name)
    family = stem.group(0) if stem else name
    return _SAME_ARCHITECTURE.get(family, family)


def held_out(rows: list[Row], features: Mapping[tuple[str, int], dict],
             group: Callable[[Row], str], **fit_options) -> list[tuple[Row, float]]:
    """(row, prediction) with every group's rows predicted by a fit (`lut.estimate.fit`, with
    `fit_options`) without that group's rows, with their family's factor from the rows the fit
    saw (none where it saw none of the family)."""
    usable, x, y = design(rows, features)
    sources = np.array([r.source for r in usable])
    groups = np.array([group(r) for r in usable])
    out = []
    for name in dict.fromkeys(groups):
        held = groups == name
        m = fit(x[~held], y[~held], list(sources[~held]), **fit_options)
        m.families = family_factors(m, [usable[i] for i in np.flatnonzero(~held)], features)
        for i in np.flatnonzero(held):
            r = usable[i]
            if r.source in m.scales:
                out.append((r, m.network_ms(dict(zip(FEATURES, x[i])), r.source, architecture_family(r.model))))
    return out


def leave_one_model_out(rows: list[Row], features: Mapping[tuple[str, int], dict],
                        **fit_options) -> list[tuple[Row, float]]:
    """Every model's rows predicted by a fit without that model."""
    return held_out(rows, features, lambda r: r.model, **fit_options)


def leave_family_out(rows: list[Row], features: Mapping[tuple[str, int], dict],
                     **fit_options) -> list[tuple[Row, float]]:
    """Every architecture family's rows (every MobileViTv2, every EfficientNet, ...) predicted by a
    fit that saw none of them: how the estimate does on an architecture it has never seen."""
    return held_out(rows, features, lambda r: architecture_family(r.model), **fit_options)


# The quantiles of (published / held-out estimate) a table keeps: any interval or one-sided bound
# between 5 % and 95 % is read off them
RATIO_QUANTILES = tuple(round(0.05 * i, 2) for i in range(1, 20))


def error_ratios(pairs: list[tuple[Row, float]]) -> dict:
    """What an estimate's error bar is made of: per source (protocol), quantiles of published /
    predicted over its held-out predictions (`leave_family_out`'s), as ``[[q, ratio], ...]``. Per
    source, because a table estimates one protocol, and protocols differ in how often a model
    falls off the Neural Engine (FMViT's iOS 16.6 numbers: ConvNeXt-T at 68 ms)."""
    out = {}
    for src in sorted({r.source for r, _ in pairs}):
        ratios = np.array([r.ms / p for r, p in pairs if r.source == src])
        out[src] = {"rows": len(ratios),
                    "ratio_quantiles": [[q, round(float(np.quantile(ratios, q)), 4)] for q in RATIO_QUANTILES]}
    return {"method": "leave-architecture-family-out", "by_source": out}


def error_summary(pairs: list[tuple[Row, float]], by: Callable[[Row], str] = lambda r: r.source) -> dict[str, dict]:
    """Per group (`by`: the source by default): rows, MAPE, median APE, the shares within ±5 % and
    ±10 % (in %), Spearman rank correlation of predicted vs published (NaN under 3 rows)."""
    from scipy.stats import spearmanr

    out = {}
    for src in sorted({by(r) for r, _ in pairs}):
        sel = [(r.ms, p) for r, p in pairs if by(r) == src]
        ape = [abs(p / y - 1) * 100 for y, p in sel]
        rho = spearmanr([y for y, _ in sel], [p for _, p in sel]).statistic if len(sel) > 2 else math.nan
        out[src] = {"rows": len(sel), "mape_pct": statistics.mean(ape), "median_ape_pct": statistics.median(ape),
                    "within_5_pct": 100 * sum(a <= 5 for a in ape) / len(ape),
                    "within_10_pct": 100 * sum(a <= 10 for a in ape) / len(ape), "spearman": float(rho)}
    return out
