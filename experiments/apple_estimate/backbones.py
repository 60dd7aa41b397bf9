"""Do the published backbone latencies at 512 px belong in the Core ML cost model's fit, and how far
does the estimate carry to them?

The published table holds 48 Apple-phone rows of detection / segmentation backbones at 512x512
(FastViT's Table 9, iFormer's Table 5, FMViT's Table 4, RepViT's segmentation README), each the
network without its classifier: `lut.published` builds them as timm's ``features_only`` models.

1. Leave-architecture-family-out error on the classification rows (what the shipped fit is judged
   by), fitted three ways: on the classification rows only (shipped); with the backbone rows pooled
   into their paper's source; with the backbone rows as a source of their own per paper (their own
   scale and per-call overhead).
2. The backbone rows predicted by the shipped fit, with their family's factor where the calibration
   holds the family, and by a fit that saw none of their family (leave-family-out).

    python experiments/apple_estimate/backbones.py

Writes backbones.md here.
"""
from __future__ import annotations

import dataclasses
import datetime
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from lut import estimate, published
from nas.core import io

HERE = Path(__file__).resolve().parent


def _summary(pairs: list[tuple[published.Row, float]]) -> str:
    if not pairs:
        return "| 0 | | | | | |"
    ape = np.array([abs(p / r.ms - 1) for r, p in pairs]) * 100
    rho = spearmanr([r.ms for r, _ in pairs], [p for _, p in pairs]).statistic if len(pairs) > 2 else float("nan")
    return (f"| {len(pairs)} | {ape.mean():.1f} | {np.median(ape):.1f} | {np.mean(ape <= 5) * 100:.0f} | "
            f"{np.mean(ape <= 10) * 100:.0f} | {rho:.3f} |")


def main() -> None:
    t0 = time.time()
    classification = published.calibration_rows()
    everything = published.calibration_rows(backbones=True)
    backbones = [r for r in everything if r.model.endswith(published.BACKBONE)]
    shipped = estimate.CostModel.load()
    features = shipped.profiled_features()
    features.update(published.calibration_features([r for r in everything if (r.model, r.resolution) not in features]))
    failed = sorted({r.published for r in backbones if "error" in features[r.model, r.resolution]})
    print(f"profiled: {time.time() - t0:.0f} s", flush=True)

    key = lambda r: (r.model, r.resolution, r.source, r.ms)   # noqa: E731
    judged = {key(r) for r in classification}
    fits = {"classification rows only (shipped)": classification,
            "+ backbones in their paper's source": everything,
            "+ backbones, a source of their own per paper": [
                dataclasses.replace(r, source=f"{r.source} @512") if r.model.endswith(published.BACKBONE) else r
                for r in everything]}
    lines = [f"# Backbones at 512 px: in the fit, or a check of it? ({datetime.date.today()})", "",
             "Reproduce: `python experiments/apple_estimate/backbones.py` "
             f"({time.time() - t0:.0f} s to profile; the fits follow). {len(backbones)} published Apple-phone rows of "
             "detection / segmentation backbones at 512x512, built as timm `features_only` models"
             + (f"; {len(failed)} cannot be built at 512 px that way and are left out: {', '.join(failed)}" if failed else "")
             + ".", "",
             "## 1. Leave-family-out error on the classification rows, by what the fit saw", "",
             "APE = |estimate / published - 1| %; every row predicted by a fit without its architecture family.", "",
             "| fit | rows | MAPE % | median APE % | within ±5 % | within ±10 % | Spearman |", "|---|---|---|---|---|---|---|"]
    for label, rows in fits.items():
        pairs = published.leave_family_out(rows, features)
        on_classification = [(r, p) for r, p in pairs if key(r) in judged]
        lines.append(f"| {label} " + _summary(on_classification))
        ref = [(r, p) for r, p in on_classification if r.source == estimate.REFERENCE_SOURCE]
        lines.append(f"| ... its {estimate.REFERENCE_SOURCE} rows (`iphone12`) " + _summary(ref))
        print(label, f"{time.time() - t0:.0f} s", flush=True)

    usable = [r for r in backbones if "error" not in features[r.model, r.resolution]]
    seen = [(r, shipped.network_ms(features[r.model, r.resolution], r.source, published.architecture_family(r.model)))
            for r in usable]
    # a backbone's family left out of the shipped kind of fit (classification rows only)
    unseen = []
    usable_cls, x, y = published.design(classification, features)
    for family in dict.fromkeys(published.architecture_family(r.model) for r in usable):
        keep = [i for i, r in enumerate(usable_cls) if published.architecture_family(r.model) != family]
        m = estimate.fit(x[keep], y[keep], [usable_cls[i].source for i in keep])
        m.families = published.family_factors(m, [usable_cls[i] for i in keep], features)
        unseen += [(r, m.network_ms(features[r.model, r.resolution], r.source, family)) for r in usable
                   if published.architecture_family(r.model) == family and r.source in m.scales]
    lines += ["", "## 2. The backbone rows, estimated by the shipped fit (classification rows only)", "",
              "Seen: the shipped fit times the family's factor (the calibration's classification rows hold "
              "every family below but PVTv2's and Twins'); unseen: a fit without the family's classification rows.", "",
              "| source | estimate | rows | MAPE % | median APE % | within ±5 % | within ±10 % | Spearman |",
              "|---|---|---|---|---|---|---|---|"]
    for src in sorted({r.source for r in usable}):
        for label, pairs in (("family seen", seen), ("family unseen", unseen)):
            lines.append(f"| {src} | {label} " + _summary([(r, p) for r, p in pairs if r.source == src]))
    lines += ["", "| backbone | source | published ms | seen: estimate (ratio) | unseen: estimate (ratio) |",
              "|---|---|---|---|---|"]
    unseen_of = {key(r): p for r, p in unseen}
    for r, p in seen:
        u = unseen_of.get(key(r))
        lines.append(f"| {r.published} | {r.source} | {r.ms:g} | {p:.2f} ({r.ms / p:.2f}x) | "
                     + (f"{u:.2f} ({r.ms / u:.2f}x) |" if u else "n/a |"))
    lines += ["", f"Total: {time.time() - t0:.0f} s.", ""]
    io.write_text(HERE / "backbones.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
