"""Every published variant of every family through ``nas export --format all``.

Weights and BN statistics are randomised (seed 0, as in family_parity) so that the folded
branches carry real values; the ONNX file must match torch's deploy model within 1e-4 (max
relative difference, onnxruntime CPU EP), the Core ML ML program must convert and save (running
it needs macOS). Artefacts go to a scratch directory and are deleted.

    python experiments/export_all/run.py
"""
from __future__ import annotations

import datetime
import sys
import tempfile
import time
from pathlib import Path

import torch

import search_spaces
from nas import export
from supernets.config import ArchConfig
from supernets.registry import family_names, get_family

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))   # the repository root, for the tests' weight randomiser
from tests.conftest import randomise  # noqa: E402


def main() -> int:
    rows, failures = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for family in family_names():
            for variant in search_spaces.variant_names(family):
                cfg = ArchConfig.load(search_spaces.variant_path(family, variant))
                weights = Path(tmp) / f"{family}_{variant}.pt"
                torch.save(randomise(get_family(family).build(cfg)).state_dict(), weights)
                t0 = time.time()
                try:
                    done = export.export(cfg, list(export.FORMATS), Path(tmp) / f"{family}_{variant}", weights=weights)
                    onnx = next(e for e in done if e.format == "onnx")
                    coreml = next(e for e in done if e.format == "coreml")
                    status = (f"{onnx.max_rel_diff:.1e}", "converted, saved" if coreml.path.is_dir() else "missing")
                except Exception as e:  # noqa: BLE001 - record and go on: the table lists every variant
                    failures += 1
                    status = (f"failed: {str(e)[:80]}", "")
                rows.append((family, variant, cfg.resolution, *status, time.time() - t0))
                print(*rows[-1], flush=True)
                weights.unlink()
    lines = [f"# Export of every published variant ({datetime.date.today()})", "",
             "Reproduce: `python experiments/export_all/run.py`. Randomised weights and BN statistics; ONNX verified "
             "against torch's deploy model with onnxruntime (max |diff| / max |torch|, limit 1e-4); Core ML converted "
             "(mlprogram, iOS 16) and saved (prediction needs macOS).", "",
             f"{len(rows) - failures} of {len(rows)} variants exported to both formats.", "",
             "| family | variant | px | ONNX max rel. diff | Core ML | s |", "|---|---|---|---|---|---|"]
    lines += [f"| {f} | {v} | {r} | {o} | {c} | {s:.0f} |" for f, v, r, o, c, s in rows]
    (HERE / "result.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'result.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
