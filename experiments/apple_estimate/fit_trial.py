"""How should the Apple cost model's weights be fitted so that it prices architectures it never saw? (#32 part 1)

`features_trial.py` changed the features and kept the fit; this trial keeps the features
(`lut.features.FEATURES`) and changes what the fit (`lut.estimate.fit`) may do with them:

- tied: the ops the Neural Engine runs as one streaming pass over their tensors (depthwise convs,
  elementwise ops, activations, norms, pooling: `lut.estimate.STREAMED`) share one rate per MB,
  instead of a rate per kind that one or two architectures set;
- floor: no matmul (weight conv/linear, attention) is priced below the A14 Neural Engine's peak,
  11 TOPS, 0.182 ms per GMAC (`lut.estimate.COMPUTE_FLOOR`);
- variations of the tied set and the floor.

Each candidate is judged by leave-family-out (`lut.published.leave_family_out`: every
architecture family predicted by a fit without it) and, for the rows of architectures the fit has
seen (#32's 27 iPhone-12 rows were mostly such), by leave-one-model-out, where every candidate's
estimate is multiplied by the model's family factor from the other rows (`lut.published.family_factors`). Choosing the candidate on
the rows it is judged on flatters it, so the last line chooses it nested: for every family left
out, the candidate with the smallest median |log error| leaving out each of the other families.

    python experiments/apple_estimate/fit_trial.py     # the shipped model's profiled features; 2-3 min

Writes fit_trial.md here.
"""
from __future__ import annotations

import datetime
import math
import sys
import time
from pathlib import Path

import numpy as np

from lut import estimate, published
from lut.features import FEATURES
from nas.core import io

HERE = Path(__file__).resolve().parent
PEAK = estimate.COMPUTE_FLOOR["dense_gmacs"]

CANDIDATES = {
    "coreml-cost-v1 (every weight free)": {"streamed": (), "floors": {}},
    "tied": {"floors": {}},
    "floor": {"streamed": ()},
    "tied + floor (coreml-cost-v2)": {},
    "tied + floor on weight convs only": {"floors": {"dense_gmacs": PEAK}},
    "tied without depthwise + floor": {"streamed": tuple(k for k in estimate.STREAMED if k != "depthwise_mb")},
    "tied with weight bytes + floor": {"streamed": estimate.STREAMED + ("weight_mb",)},
    "tied with softmax and layout + floor": {"streamed": estimate.STREAMED + ("softmax_mb", "layout_mb")},
}
BEFORE, AFTER = "coreml-cost-v1 (every weight free)", "tied + floor (coreml-cost-v2)"
SOURCES = ("A14 iOS16 ModelBench", "A15 iFormer")   # the protocols iphone12 and iphone13 reproduce
NAMED = [("EfficientFormer-L1", "efficientformer_l1", 224), ("EfficientFormer-L3", "efficientformer_l3", 224),
         ("EfficientFormer-L7", "efficientformer_l7", 224), ("FastViT-T8", "fastvit_t8", 256),
         ("FastViT-SA12", "fastvit_sa12", 256), ("MobileOne-S0", "mobileone_s0", 224),
         ("PoolFormer-S12", "poolformer_s12", 224), ("EfficientNet-B3", "efficientnet_b3", 300)]


def _score(pairs) -> float:
    """What the nested choice minimises: the median |log(estimate / published)| (robust to the
    rows a protocol ran off the Neural Engine)."""
    return float(np.median([abs(math.log(p / r.ms)) for r, p in pairs])) if pairs else math.inf


def _cells(pairs) -> str:
    s = published.error_summary(pairs, by=lambda r: "all")["all"]
    return f"{s['mape_pct']:.1f} | {s['median_ape_pct']:.1f} | {s['within_5_pct']:.0f} | {s['within_10_pct']:.0f} | {s['spearman']:.3f}"


def _by_source(pairs) -> list[str]:
    by = published.error_summary(pairs)
    return [f"{by[s]['mape_pct']:.1f}, {by[s]['median_ape_pct']:.1f}, {by[s]['within_10_pct']:.0f} %, {by[s]['spearman']:.3f}"
            for s in SOURCES]


def main() -> int:
    t0 = time.time()
    # the features the shipped model was fitted on (whichever version it is: they do not depend on the fit)
    features = {(key.rsplit("@", 1)[0], int(key.rsplit("@", 1)[1])): feats
                for key, feats in io.read_yaml(estimate.SHIPPED_MODEL)["profiled"].items()}
    rows = [r for r in published.calibration_rows() if (r.model, r.resolution) in features]
    families = sorted({published.architecture_family(r.model) for r in rows})
    lofo = {name: published.leave_family_out(rows, features, **opts) for name, opts in CANDIDATES.items()}
    lomo = {name: published.leave_one_model_out(rows, features, **opts) for name, opts in CANDIDATES.items()}
    print(f"{len(CANDIDATES)} candidates left out by family and by model: {time.time() - t0:.0f} s", flush=True)

    nested = []
    for i, fam in enumerate(families):
        train = [r for r in rows if published.architecture_family(r.model) != fam]
        best = min(CANDIDATES, key=lambda n: _score(published.leave_family_out(train, features, **CANDIDATES[n])))
        _, x, y = published.design(train, features)
        model = estimate.fit(x, y, [r.source for r in train], **CANDIDATES[best])
        nested += [(r, model.network_ms(features[r.model, r.resolution], r.source))
                   for r in rows if published.architecture_family(r.model) == fam and r.source in model.scales]
        print(f"nested {i + 1}/{len(families)}: {fam} -> {best}", flush=True)

    lines = [f"# Fitting the Apple cost model, judged by leave-family-out ({datetime.date.today()})", "",
             "    python experiments/apple_estimate/fit_trial.py", "",
             " ".join(__doc__.split("\n\n")[1].split()), "",
             f"{len(rows)} published rows, {len(families)} architecture families; features as profiled in the "
             f"shipped cost model; {time.time() - t0:.0f} s here.", "",
             "| fit | left out | MAPE % | median APE % | within ±5 % | within ±10 % | Spearman | "
             "A14 iOS16 rows (iphone12): MAPE %, median %, ±10 %, Spearman | A15 iFormer rows (iphone13): same |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in CANDIDATES:
        for how, pairs in (("family", lofo[name]), ("model", lomo[name])):
            lines.append(f"| {name} | {how} | {_cells(pairs)} | " + " | ".join(_by_source(pairs)) + " |")
    lines.append(f"| nested choice (per family left out, chosen on the others) | family | {_cells(nested)} | "
                 + " | ".join(_by_source(nested)) + " |")

    full = {}
    for name in (BEFORE, AFTER):
        _, x, y = published.design(rows, features)
        full[name] = estimate.fit(x, y, [r.source for r in rows], **CANDIDATES[name])
    lines += ["", "Fitted weights, full fit (ms per unit at the reference source's speed):", "",
              "| feature | " + " | ".join(full) + " |", "|---|---|---|"]
    lines += [f"| {k} | " + " | ".join(f"{m.weights[k]:.4g}" for m in full.values()) + " |" for k in FEATURES]
    lines += ["", "Named models priced for iphone12 (A14 iOS16 protocol) by the full fit:", "",
              "| model | px | " + " | ".join(full) + " | published (A14 iOS16) |", "|---|---|---|---|---|"]
    for label, model, res in NAMED:
        f = features.get((model, res))
        if f is None:
            continue
        pub = [f"{r.ms:g}" for r in rows if r.model == model and r.resolution == res and r.source == SOURCES[0]]
        lines.append(f"| {label} | {res} | " + " | ".join(f"{m.network_ms(f, SOURCES[0]):.2f}" for m in full.values())
                     + f" | {', '.join(dict.fromkeys(pub)) or 'none'} |")

    per = {n: published.error_summary(lofo[n], by=lambda r: published.architecture_family(r.model)) for n in (BEFORE, AFTER)}
    signed = {n: {fam: 100 * float(np.median([p / r.ms - 1 for r, p in lofo[n] if published.architecture_family(r.model) == fam]))
                  for fam in families} for n in (BEFORE, AFTER)}
    lines += ["", CONCLUSION, "", f"Per family left out, {BEFORE} → {AFTER}:", "",
              "| family | rows | median APE % | within ±10 % | Spearman | signed % |", "|---|---|---|---|---|---|"]
    for fam in sorted(families, key=lambda f: -per[BEFORE][f]["rows"]):
        a, b = per[BEFORE][fam], per[AFTER][fam]
        rho = "–" if math.isnan(a["spearman"]) else f"{a['spearman']:.2f} → {b['spearman']:.2f}"
        lines.append(f"| {fam} | {a['rows']} | {a['median_ape_pct']:.0f} → {b['median_ape_pct']:.0f} | "
                     f"{a['within_10_pct']:.0f} → {b['within_10_pct']:.0f} | {rho} | "
                     f"{signed[BEFORE][fam]:+.0f} → {signed[AFTER][fam]:+.0f} |")
    io.write_text(HERE / "fit_trial.md", "\n".join(lines) + "\n")
    print("\n".join(lines[:len(CANDIDATES) * 2 + 12]))
    return 0


CONCLUSION = (
    "**Tied: adopted as coreml-cost-v2 (2026-12-06), with the floor.** Tying the streamed kinds to one rate "
    "is what moves the family-out figures: MAPE 36.1 → 28.4 %, median 26.0 → 16.8 %, within ±10 % 31 → 37 %, "
    "Spearman 0.809 → 0.832; on the A14 iOS 16 rows (`iphone12`) MAPE 40.1 → 22.6 %, median 34.3 → 10.5 %, "
    "within ±10 % 22 → 48 %. PoolFormer's median error goes from 111 to 21 %, FastViT's from 32 to 8 %, "
    "MobileNetV4's from 18 to 3 %. The floor alone changes nothing; with the tie it adds a little (27.6 %) and "
    "keeps MACs at a cost the chip can reach (free, the tied fit priced a GMAC at 0.05 ms, four times faster "
    "than the A14's peak, and moved the time to weight bytes). Chosen nested, the candidate is a tied one for "
    "every family (the plain tie for 26 of 35), and the nested figure (28.3 %) is what the choice is worth. "
    "Tying softmax and layout changes too, or weight bytes, is worse. No fit moves EfficientNet (−52 %), "
    "EfficientViT (MIT, −76 %), MobileViT v2 (−74 %), MaxViT, ResNeSt or the models that fell off the Neural "
    "Engine in one paper's stack (ConvNeXt, LeViT): their published times are 2–20x their op counts, and no "
    "architecture the fit keeps shows why. #32's goal (MAPE ≤ 10 %, Spearman ≥ 0.95, ≥ 70 % within ±10 %) "
    "stays far. Where the calibration holds the family, its factor (`lut.published.family_factors`) carries "
    "what the op counts miss: held out model by model, the A14 iOS 16 rows go to Spearman 0.98 and the A15 "
    "iFormer rows to 0.94 (the model rows above; coreml-cost-v1 without the factor: 0.962 and 0.805, "
    "experiments/apple_estimate/result.md of 2026-12-06 before this change). The factor, not the tie, makes "
    "those: v1's fit with it reaches 0.985 and 0.944; the tie adds a lower median (11.4 → 9.3 %) and more rows "
    "within ±10 % (45 → 54 %).")

if __name__ == "__main__":
    sys.exit(main())
