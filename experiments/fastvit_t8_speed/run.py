"""Deploy-form CPU inference time: our FastViT-T8 vs timm's ``fastvit_t8``.

Both reparameterized (ours: ``supernets.layers.reparameterize``; timm: ``timm.utils.reparameterize_model``),
in the same process, 1 thread, batch 1 at 256 px, timed in interleaved rounds with the harness
the latency tables use (``lut.measure.time_rounds``: ``blocked_autorange`` per model per round).
timm's weights are mapped onto ours first, and the outputs are checked equal, so the two are the
same function. Reports per-round ratios ours / timm and writes result.md here. Goal: ratio <= 1.00.

    python experiments/fastvit_t8_speed/run.py --rounds 15
"""
from __future__ import annotations

import argparse
import datetime
import statistics
from pathlib import Path

import timm
import torch
from timm.utils import reparameterize_model

from lut.measure import time_rounds
from supernets import fastvit as fv
from supernets.layers import reparameterize

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--variant", default="t8")
    args = p.parse_args()
    reference = timm.create_model(f"fastvit_{args.variant}").eval()
    ours = timm.create_model(f"nas_fastvit_{args.variant}").eval()
    ours.load_state_dict(fv.convert_timm_state_dict(reference.state_dict()), strict=True)
    ours, reference = reparameterize(ours), reparameterize_model(reference)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(x) - reference(x)).abs().max().item()
    per_round: dict = {}
    timed = time_rounds([], [("ours", ours, x), ("timm", reference, x)], num_threads=1, rounds=args.rounds,
                        model_min_run_time=0.5, on_round=lambda rec: per_round.update(rec["models"]))
    o, t = timed.models["ours"], timed.models["timm"]
    ratios = [a / b for a, b in zip(per_round["ours"], per_round["timm"])]   # paired: same round, same phase
    lines = [f"# FastViT-{args.variant.upper()} deploy form: ours vs timm ({datetime.date.today().isoformat()})", "",
             f"Reproduce: `python experiments/fastvit_t8_speed/run.py --rounds {args.rounds}`", "",
             f"1 thread, batch 1, 256 px, {args.rounds} interleaved rounds (blocked_autorange, >= 0.5 s each); "
             f"outputs equal to {diff:.1e} (timm weights mapped onto ours).", "",
             "| model | fastest round ms | median round ms | mean ms | std ms |", "|---|---|---|---|---|",
             f"| ours | {o.ms:.3f} | {o.median_ms:.3f} | {o.mean_ms:.3f} | {o.std_ms:.3f} |",
             f"| timm | {t.ms:.3f} | {t.median_ms:.3f} | {t.mean_ms:.3f} | {t.std_ms:.3f} |", "",
             f"Ratio ours / timm: median of per-round ratios {statistics.median(ratios):.3f} "
             f"(range {min(ratios):.3f}-{max(ratios):.3f}); fastest rounds {o.ms / t.ms:.3f} (goal <= 1.00).", ""]
    text = "\n".join(lines)
    print(text)
    (HERE / "result.md").write_text(text)


if __name__ == "__main__":
    main()
