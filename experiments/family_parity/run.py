"""Parity of every published variant: parameters (train and deploy form) against the reference,
the largest train-vs-deploy output difference, and deploy-form MACs.

References (specs/families.md): FastViT = timm ``fastvit_*`` instantiated here (train and after
``timm.utils.reparameterize_model``); MobileViTv3 = §4.4 (the reference has no deploy step: its
inference count is the train count; ours also folds BN, hence fewer deploy parameters);
iFormer = §5.5 (train -> fused); the L2 variants of MobileViTv3 have only the README's rounded
counts; FMViT has no code, so its reference is the paper's Table 2 (params and FLOPs, rounded),
which our deploy form must meet within ±10% / ±15%. (EfficientFormer's parity is in tests/supernets/test_efficientformer.py.) Weights and BN statistics are
randomised (seed 0) so the train/deploy comparison exercises every folded branch.

    python experiments/family_parity/run.py
"""
from __future__ import annotations

import datetime
import sys
from pathlib import Path

import timm
import torch
from timm.utils import reparameterize_model

from lut.graph import macs
from supernets.layers import count_params, reparameterize
from supernets.registry import get_family

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))   # the repository root, for the tests' weight randomiser
from tests.conftest import randomise  # noqa: E402

# specs/families.md §4.4 and §5.5: (train, deploy) of the reference
SPEC = {
    ("mobilevitv3", "xxs"): (1_249_448, None), ("mobilevitv3", "xs"): (2_490_360, None),
    ("mobilevitv3", "s"): (5_763_912, None), ("mobilevitv3", "050"): (1_429_985, None),
    ("mobilevitv3", "075"): (2_999_641, None), ("mobilevitv3", "100"): (5_139_409, None),
    ("iformer", "t"): (2_886_456, 2_873_032), ("iformer", "s"): (6_563_368, 6_540_152),
    ("iformer", "m"): (8_907_424, 8_879_128), ("iformer", "l"): (14_779_808, 14_737_624),
    ("iformer", "l2"): (24_518_984, 24_455_016), ("iformer", "h"): (99_596_632, 99_436_168),
}


# FMViT paper Table 2: (params M, GFLOPs counted as MACs) at 224 px
FMVIT_PAPER = {"t": (2.0, 0.3), "s": (6.4, 0.8), "m": (12.8, 2.0), "b": (24.3, 4.2), "l": (35.3, 7.1)}


def reference(family: str, variant: str) -> tuple[int | None, int | None, str]:
    if family == "fastvit":
        m = timm.create_model(f"fastvit_{variant}")
        return count_params(m), count_params(reparameterize_model(m)), "timm"
    if (family, variant) in SPEC:
        return (*SPEC[family, variant], "spec")
    return None, None, "README (rounded)"


def row(family: str, variant: str) -> str:
    model = randomise(timm.create_model(f"nas_{family}_{variant}"))
    deployed = reparameterize(model)
    res = model.config.resolution
    x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = model(x), deployed(x)
    rel = ((got - want).abs().max() / want.abs().max()).item()
    ref_train, ref_deploy, source = reference(family, variant)
    ours_train, ours_deploy = count_params(model), count_params(deployed)

    def cell(ours: int, ref: int | None) -> str:
        return f"{ours:,}" + ("" if ref is None else (" =" if ours == ref else f" ≠ {ref:,}"))

    gmacs = macs(deployed, torch.zeros(1, 3, res, res)) / 1e9
    deploy_cell, gmacs_cell = cell(ours_deploy, ref_deploy), f"{gmacs:.3f}"
    if family == "fmvit":
        params, flops = FMVIT_PAPER[variant]
        source = "paper Table 2"
        deploy_cell += f" ({100 * (ours_deploy / 1e6 / params - 1):+.1f}% vs {params} M)"
        gmacs_cell += f" ({100 * (gmacs / flops - 1):+.1f}% vs {flops} G)"
    return (f"| {family} | {variant} | {res} | {cell(ours_train, ref_train)} | {deploy_cell} | "
            f"{source} | {rel:.1e} | {gmacs_cell} |")


def main() -> None:
    lines = [f"# Published variants: parity and train-vs-deploy equality ({datetime.date.today().isoformat()})", "",
             "Reproduce: `python experiments/family_parity/run.py`. `=`: equal to the reference; "
             "MobileViTv3's reference has no deploy step (its inference count is the train count); our "
             "deploy form folds BN, so it has no reference. MobileViTv3's published MACs (cvnets profiler) are "
             "0.289 / 0.927 / 1.841 / 0.481 / 1.064 / 1.876 G for XXS / XS / S / 0.5 / 0.75 / 1.0.", "",
             "| family | variant | px | params train | params deploy | reference | max rel. diff train vs deploy "
             "| deploy GMACs |", "|---|---|---|---|---|---|---|---|"]
    for family in ("fastvit", "mobilevitv3", "iformer", "fmvit"):
        for variant in get_family(family).variants:
            lines.append(row(family, variant))
            print(lines[-1], flush=True)
    (HERE / "result.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
