"""Apple devices: on-device timings in, latency table out.

Core ML runs only on Apple hardware, so an Apple table is filled in three steps:

1. ``nas lut export --device iphone12 --family F`` writes one Core ML ML program per op key the
   device's table lacks (deploy form, batch 1, ``torch.export`` -> ``run_decompositions({})`` ->
   ``coremltools.convert``, iOS 16 target) and ``manifest.csv`` (key, file, input shape);
2. the user times each package on the phone or a Mac: Xcode (open the ``.mlpackage``,
   Performance tab, "+", pick the connected iPhone: the report's median prediction time), or on
   macOS the ``time_on_mac.py`` written next to the manifest (coremltools ``MLModel.predict``,
   median of timed calls; it writes ``timings.csv``);
3. ``nas lut import timings.csv --device iphone12`` checks every row (known key, positive
   time) and adds the entries as ``measured`` (imported) to the user's table.

The manifest and the timings file are the round trip's (``lut.ondevice``), shared with ExecuTorch's.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

from lut import graph
from lut.ondevice import ExportResult, export_each
from nas.core import io
from supernets.registry import OpNode

MAC_SCRIPT = "time_on_mac.py"
EXPORTS = "Core ML packages"   # what `nas lut export` says it writes
FOLDER = "apple"   # RUNS/FOLDER/DEVICE@RES: where `nas lut export` writes them by default


def mlprogram(module: torch.nn.Module, x: torch.Tensor, input_name: str = "x"):
    """The Core ML ML program of a deploy-form module, through ``torch.export`` and
    ``run_decompositions({})``: coremltools 9's ``torch.jit.trace`` path fails on every reshape
    sized from ``x.shape`` (all attention blocks) with numpy 2.4, and the export path fails
    without the decompositions."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct

    program = torch.export.export(module.eval(), (x,)).run_decompositions({})
    return ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                      inputs=[ct.TensorType(name=input_name, shape=tuple(x.shape))])


def save_mlpackage(mlmodel, path: Path) -> Path:
    """Save a converted model as ``path`` (a directory) atomically: staged, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staged = tmp_dir / path.name
        mlmodel.save(str(staged))
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(staged, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def how_to_time(out_dir: Path) -> str:
    """How a user times an export's packages (what `nas lut export` tells them)."""
    return f"Xcode performance report, or {Path(out_dir) / MAC_SCRIPT} on a Mac"


def export_ops(ops: dict[str, OpNode], out_dir: Path, device, resolution: int,
               progress: Callable[[int], None] | None = None) -> ExportResult:
    """One ``.mlpackage`` per op plus the manifest and the macOS timing script. Packages that
    already exist are kept, so a killed export continues where it stopped."""
    result = export_each(ops, out_dir, ".mlpackage",
                         lambda op, x, path: save_mlpackage(mlprogram(graph.deploy_module(op), x), path), progress)
    io.write_text(out_dir / MAC_SCRIPT, _MAC_SCRIPT.format(device=device.name, resolution=resolution))
    return result


_MAC_SCRIPT = '''"""Time every Core ML package of this export on a Mac (macOS only; coremltools installed).

    python time_on_mac.py [--compute-units ALL|CPU_AND_NE|CPU_AND_GPU|CPU_ONLY] [--calls 100]

Writes timings.csv (file, ms: the median of timed predictions after warm-up) next to this
script; then, on the machine with nas: nas lut import timings.csv --device {device}
(table {device}@{resolution}). On macOS >= 14.4 the timing is coremltools' MLModelBenchmarker
(benchmark_predict with warm-up); before that, a loop of MLModel.predict calls. A Mac's chip is
not the phone's: for phone numbers use Xcode's performance report on the device (open the
package, Performance tab, "+", pick the iPhone) and write its medians into timings.csv the same way.
"""
import argparse
import asyncio
import csv
import statistics
import time
from pathlib import Path

import coremltools as ct
import numpy as np

here = Path(__file__).resolve().parent
p = argparse.ArgumentParser()
p.add_argument("--compute-units", default="ALL")
p.add_argument("--calls", type=int, default=100)
args = p.parse_args()
units = getattr(ct.ComputeUnit, args.compute_units)


def median_ms(path, shape):
    x = {{"x": np.random.rand(*shape).astype(np.float32)}}
    try:
        from coremltools.models.ml_program.experimental.perf_utils import MLModelBenchmarker

        bench = MLModelBenchmarker(model=ct.models.MLModel(str(path), compute_units=units))
        return asyncio.run(bench.benchmark_predict(inputs=x, iterations=args.calls, warmup=True)).statistics.median
    except (ImportError, RuntimeError, NotImplementedError):
        model = ct.models.MLModel(str(path), compute_units=units)
        for _ in range(10):
            model.predict(x)
        times = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            model.predict(x)
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


rows = []
for row in csv.DictReader(open(here / "manifest.csv")):
    ms = median_ms(here / row["file"], tuple(map(int, row["input_shape"].split("x"))))
    rows.append({{"file": row["file"], "ms": round(ms, 5)}})
    print(row["file"], rows[-1]["ms"], "ms")
with open(here / "timings.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["file", "ms"])
    w.writeheader()
    w.writerows(rows)
'''
