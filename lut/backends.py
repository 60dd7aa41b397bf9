"""Measurement backends: how a device runs a deploy-form op or network, and how one call is timed.

``lut.measure.time_rounds`` times *runners*: callables ``runner(x)`` for a fixed input ``x``.
A backend turns a deploy module and its input into a runner:

* ``torch-eager`` (device ``cpu``): the module itself; calls timed with ``perf_counter_ns``;
* ``torch-cuda`` (device ``cuda``): module and input on the GPU, timed by CUDA events; a hot op
  is timed with its calls queued back to back, as a network queues its ops (``CudaRunner``), and
  its table fits a factor per kind of op on whole networks (``Backend.launch_bound``);
* ``onnxruntime`` (device ``onnxruntime``): the module exported with ``torch.onnx.export``
  (dynamo, as ``nas export``) and run by an ONNX Runtime CPU session with the device's thread
  count;
* ``executorch`` (device ``xnnpack``; phones declared in devices.yaml): the module exported to a
  ``.pte`` with XNNPACK delegation and run by ``executorch.runtime`` with the device's threads
  (``lut.pte``); a phone's ops are exported (``nas lut export``), timed there with ExecuTorch's
  ``executor_runner`` over adb, and imported;
* ``coreml``: Core ML runs only on Apple hardware; its tables are imported from on-device
  timings (``nas lut export`` / ``nas lut import``) or estimated.

Runners are ``nn.Module``s holding the torch module, so parameter counts still work on them.
"""
from __future__ import annotations

import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lut.measure import cpu_model
from nas.core.errors import UserError


@dataclass(frozen=True)
class Backend:
    name: str
    available: Callable[[], str | None]          # None when usable here, else why not
    wrap: Callable[[nn.Module, torch.Tensor, int], tuple[nn.Module, torch.Tensor]] | None
    versions: Callable[[], dict]
    # How its tables are filled: True, timed on this machine (`nas lut build`); False, timed on the
    # device and imported (`nas lut import`), or estimated where a device declares a protocol to
    # estimate with (`Device.estimated_as`). A table it fills does not record this machine.
    on_this_host: bool = True
    # The module that writes the files to time on the device (`nas lut export`): it has
    # ``export_ops(ops, out, device, resolution, progress)``, ``how_to_time(out)`` and ``EXPORTS``
    # (what it writes, in words), as ``lut.apple``; None: the backend times here, nothing to export
    exporter: str | None = None
    # Whether ops run in a network otherwise than alone because the host queues them (a GPU at
    # batch 1): its tables then price hot times by a factor per kind of op, fitted on whole
    # networks, in place of the cache blend (``lut.build.fit_kind_factors``)
    launch_bound: bool = False
    # Whether an op run alone converts its 4D input and output between the framework's layout and
    # the kernels' (NCHW <-> NHWC, XNNPACK) at the program's edges, which a network does once:
    # its tables then fit a cost per MB of each op's 4D input and output on whole networks and
    # take it off the op's time (``lut.table.CacheModel.boundary_ms_per_mb``)
    layout_boundaries: bool = False


def _torch_versions() -> dict:
    return {"torch": str(torch.__version__)}


# ---------------------------------------------------------------------------- CUDA
class CudaRunner(nn.Module):
    """A module on the GPU, timed by CUDA events.

    At batch 1 a GPU is launch-bound: an op's kernels take microseconds, and launching them takes
    about as long. Timed alone (events around one call, then a synchronise) an op pays the whole
    launch latency; inside a network it does not, since the host queues the next op's kernels
    while the GPU runs this one's. So ``time_calls`` times ops *as a network runs them*: `calls`
    calls queued back to back between one pair of events, each call's time the total over
    `calls`. One call (the cache-cold timing) is then the op alone. ``time_alone`` is the older
    per-call timing, kept for ``experiments/cuda_tables``, which compares the two."""

    _scratch: torch.Tensor | None = None   # twice the GPU's L2, read to evict it (shared by runners)

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.cuda()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def time_calls(self, x: torch.Tensor, calls: int) -> list[float]:
        """GPU milliseconds per call of `calls` calls queued back to back (one value per call)."""
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(calls):
            self.module(x)
        end.record()
        end.synchronize()
        return [start.elapsed_time(end) / calls] * calls

    def time_alone(self, x: torch.Tensor, calls: int) -> list[float]:
        """GPU milliseconds of `calls` calls, each between its own pair of events, synchronised."""
        out = []
        for _ in range(calls):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.module(x)
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        return out

    def evict_cache(self) -> None:
        """Evict the GPU's L2 (for a cache-cold call) by reading a buffer twice its size."""
        if CudaRunner._scratch is None:
            l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
            CudaRunner._scratch = torch.ones(2 * l2 // 4, device="cuda")
        CudaRunner._scratch.sum()


def _cuda_available() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA GPU is visible to torch on this machine"


def _cuda_wrap(module: nn.Module, x: torch.Tensor, threads: int) -> tuple[nn.Module, torch.Tensor]:
    return CudaRunner(module), x.cuda()


def _cuda_versions() -> dict:
    return {**_torch_versions(), "cuda": str(torch.version.cuda), "gpu": torch.cuda.get_device_name(0)}


# ---------------------------------------------------------------------------- ONNX Runtime
class OrtRunner(nn.Module):
    """An ONNX Runtime CPU session of `module`; ``forward`` feeds it the torch input (zero copy)."""

    def __init__(self, module: nn.Module, x: torch.Tensor, threads: int):
        import onnxruntime as ort

        super().__init__()
        self.module = module
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
            path = Path(tmp) / "op.onnx"
            torch.onnx.export(module, (x,), str(path), input_names=["x"], dynamo=True, external_data=False,
                              verbose=False)
            model_bytes = path.read_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor):
        return self.session.run(None, {self.input_name: x.numpy()})


def _ort_available() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime)"
    return None


def _ort_versions() -> dict:
    import onnxruntime

    return {**_torch_versions(), "onnxruntime": onnxruntime.__version__}


# ---------------------------------------------------------------------------- ExecuTorch
def _pte_available() -> str | None:
    from lut import pte

    return pte.available()


def _pte_wrap(module: nn.Module, x: torch.Tensor, threads: int, what: str = "the module"):
    from lut import pte

    return pte.PteRunner(module, x, threads, what), x


def _pte_versions() -> dict:
    from lut import pte

    return pte.versions()


# ---------------------------------------------------------------------------- Core ML
def _coreml_available() -> str | None:
    return ("Core ML runs on Apple hardware only: its tables are estimated (`nas lut estimate`) or timed on the "
            "device (`nas lut export`, then `nas lut import`)")


def _coreml_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:   # not `import coremltools`: off macOS its import complains on stderr about native proxies
        return {"coremltools": version("coremltools")}
    except PackageNotFoundError:
        return {}


BACKENDS = {
    "torch-eager": Backend("torch-eager", lambda: None, None, _torch_versions),
    "torch-cuda": Backend("torch-cuda", _cuda_available, _cuda_wrap, _cuda_versions, launch_bound=True),
    "onnxruntime": Backend("onnxruntime", _ort_available, lambda m, x, threads: (OrtRunner(m, x, threads), x),
                           _ort_versions),
    # timed here (device xnnpack) and, for a phone, exported and imported
    "executorch": Backend("executorch", _pte_available, _pte_wrap, _pte_versions, exporter="lut.pte",
                          layout_boundaries=True),
    "coreml": Backend("coreml", _coreml_available, None, _coreml_versions, on_this_host=False, exporter="lut.apple"),
}


class BackendError(UserError, ValueError):
    """An unknown backend, or one this host cannot run."""


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[name]


def runners(items, backend: str, threads: int):
    """(name, module, x) items -> (name, runner, x) for `backend` (identity for torch-eager)."""
    b = get_backend(backend)
    why = b.available()
    if why:
        raise BackendError(f"backend {backend} cannot run here: {why}")
    if b.wrap is None:
        return list(items)
    if backend == "executorch":   # an op that does not export is named by its key
        return [(name, *b.wrap(module, x, threads, f"op {name}")) for name, module, x in items]
    return [(name, *b.wrap(module, x, threads)) for name, module, x in items]


def environment(backend: str, threads: int, on_device: bool = False) -> dict:
    """What a table records about how it was measured (this machine only if it times the ops;
    `on_device`: a device timed elsewhere with a backend that can also time here, e.g. a phone's
    ExecuTorch)."""
    b = get_backend(backend)
    if on_device:
        return {"backend": backend, **b.versions(), "threads": threads, "on_device": True}
    if not b.on_this_host:
        return {"backend": backend, **b.versions()}
    return {"backend": backend, **b.versions(), "threads": threads,
            "machine": platform.machine(), "processor": platform.processor() or cpu_model(),
            "python": platform.python_version()}
