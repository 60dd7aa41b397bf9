"""ExecuTorch with XNNPACK: PyTorch's on-device runtime, the CPU kernels Android phones and
embedded boards run (TFLite's XNNPACK).

A deploy-form module becomes a ``.pte`` program: ``torch.export`` ->
``to_edge_transform_and_lower`` with XNNPACK's partitioner -> ``to_executorch``. What XNNPACK
takes runs as one delegate call per partition; the rest falls back to ExecuTorch's portable
kernels, listed by `undelegated` (where latency surprises live on a phone). Programs run through
``executorch.runtime`` on this host (`PteRunner`, timed by ``lut.measure`` as any runner), or on a
phone with ExecuTorch's own ``executor_runner`` (``nas lut export``, whose script prints the
timings ``nas lut import`` reads; `main` here is a host-side stand-in for that runner, with its
flags and its output, so the round trip is tested without a phone).

ExecuTorch is optional (``pip install -e '.[executorch]'``); without it the other devices work and
an ExecuTorch device says which extra to install.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from nas.core import io
from nas.core.errors import UserError

INSTALL = "pip install -e '.[executorch]' (or pip install executorch)"
EXPORTS = "ExecuTorch programs (.pte, XNNPACK)"   # what `nas lut export` says it writes
FOLDER = "android"   # RUNS/FOLDER/DEVICE@RES: where `nas lut export` writes them by default
# ops of an edge program that are bookkeeping, not compute: never "not delegated"
_PLUMBING = {"executorch_call_delegate", "getitem", "alloc"}


class PteError(UserError, ValueError):
    """A program that cannot be exported or loaded, or ExecuTorch missing. `subject` names what
    failed ("op KEY", a file), for callers that add where it came from."""

    def __init__(self, message: str, subject: str = ""):
        super().__init__(message)
        self.subject = subject


def available() -> str | None:
    """None when ExecuTorch can export and run here, else why not (with the extra to install)."""
    try:
        with quiet_native():
            import executorch.exir  # noqa: F401
            import executorch.runtime  # noqa: F401
    except ImportError:
        return f"ExecuTorch is not installed: {INSTALL}"
    return None


def versions() -> dict:
    from importlib.metadata import version

    return {"torch": str(torch.__version__), "executorch": version("executorch")}


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """ExecuTorch's native code logs to stderr (cpuinfo probes, threadpool resets, a program's
    identifier check), through the process's file descriptor 2 or Python's ``sys.stderr``; a CLI
    user needs none of it (the error that matters reaches the caller as an exception), so both go
    nowhere meanwhile."""
    import io as _io

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with contextlib.redirect_stderr(_io.StringIO()):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check_available() -> None:
    why = available()
    if why:
        raise PteError(why)


class TwoPassGroupNorm(nn.Module):
    """``GroupNorm(1, C)`` as XNNPACK can take it whole: per-map means averaged over the channels
    (the statistics of all C·H·W values), variance in a second pass over the centred map. ExecuTorch
    has no XNNPACK group norm; its portable kernel takes one pass, off by ~2e-5 relative per layer
    on a map with a mean offset and 4.5e-4 over MobileViT v2's 21 norms; this form is within 2e-7
    (experiments/executorch_delegation). Same parameters as the norm it replaces."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]

        def mean_of(t: torch.Tensor) -> torch.Tensor:   # (B, C, H, W) -> (B, 1, 1, 1), 4D means only
            return t.mean((2, 3), keepdim=True).reshape(B, 1, C, 1).mean((2, 3), keepdim=True)

        centred = x - mean_of(x)
        scale = torch.rsqrt(mean_of(centred * centred) + self.eps)
        return centred * scale * self.weight.reshape(1, C, 1, 1) + self.bias.reshape(1, C, 1, 1)


class TwoPassLayerNorm(nn.Module):
    """``LayerNorm(C)`` over the last dim as XNNPACK can take it: each vector of C values as a
    (C, 1) map whose 4D spatial mean gives the statistics, variance in a second pass over the
    centred values. ExecuTorch has no XNNPACK layer norm: EfficientFormer's mb3d blocks and head
    and MobileViT v1's transformers ran theirs as portable kernels, each a partition break
    (experiments/executorch_delegation). Same parameters as the norm it replaces."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(1, -1, shape[-1], 1)
        centred = x - x.mean((2, 3), keepdim=True)
        normed = centred * torch.rsqrt((centred * centred).mean((2, 3), keepdim=True) + self.eps)
        return normed.reshape(shape) * self.weight + self.bias


def _xnnpack_form(m: nn.Module) -> nn.Module | None:
    """The equivalent XNNPACK takes whole of a layer it does not, else None."""
    if isinstance(m, nn.GroupNorm) and m.num_groups == 1 and m.affine:
        return TwoPassGroupNorm(m)
    if type(m) is nn.LayerNorm and len(m.normalized_shape) == 1 and m.elementwise_affine and m.bias is not None:
        return TwoPassLayerNorm(m)
    return None


def for_xnnpack(module: nn.Module) -> nn.Module:
    """`module`, or a copy with the layers XNNPACK cannot take rewritten into equivalent ones it can
    (`TwoPassGroupNorm`, `TwoPassLayerNorm`) and layers that can hold a computed constant holding
    it (``freeze_for_export()``: EfficientFormer's gathered attention bias); the model itself is
    unchanged (its eager, ONNX and Core ML forms too)."""
    names = [name for name, m in module.named_modules() if _xnnpack_form(m) is not None]
    frozen = [name for name, m in module.named_modules() if hasattr(m, "freeze_for_export")]
    if not names and not frozen:
        return module
    if names == [""]:   # the module is itself such a layer
        return _xnnpack_form(module)
    import copy

    module = copy.deepcopy(module)
    for name in frozen:
        module.get_submodule(name).freeze_for_export()
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = module.get_submodule(parent) if parent else module
        setattr(owner, child, _xnnpack_form(getattr(owner, child)))
    return module


def lower(module: nn.Module, x: torch.Tensor, what: str = "the module"):
    """The edge program of `module` on input `x`, XNNPACK-delegated (``to_edge_transform_and_lower``).
    A module that does not export is a `PteError` naming `what`."""
    check_available()
    import warnings

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        with torch.no_grad(), warnings.catch_warnings(), quiet_native():
            warnings.simplefilter("ignore")
            program = torch.export.export(for_xnnpack(module.eval()), (x,), strict=False)
            return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    except Exception as e:  # noqa: BLE001 - export and lowering raise many types; the user needs one line
        detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise PteError(f"{what}: ExecuTorch cannot export it ({type(e).__name__}: {detail})", what) from None


def program_bytes(edge) -> bytes:
    """The ``.pte`` file's bytes of an edge program from `lower`."""
    with quiet_native():
        return edge.to_executorch().buffer


def undelegated(edge) -> Counter:
    """Compute ops of the edge program that XNNPACK did not take (they run as portable kernels),
    by name (``aten.native_layer_norm``), with how often each occurs."""
    graph = edge.exported_program().graph
    out: Counter = Counter()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if name in _PLUMBING:
            continue
        out[_op_name(node.target)] += 1
    return out


def _op_name(target) -> str:
    """``aten.native_layer_norm.default`` -> ``aten.native_layer_norm`` (overloads are one op)."""
    name = str(getattr(target, "_name", None) or target).replace("::", ".")
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else name


def set_threads(threads: int) -> None:
    """XNNPACK's thread pool is one per process: every program on this host runs with `threads`."""
    from executorch.extension.pybindings import portable_lib

    with quiet_native():
        if portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(threads)


class Loaded:
    """A loaded ``.pte``'s ``forward``. It holds the program's bytes: ExecuTorch reads the program
    in place, and a method whose bytes were freed crashes the process (measured: a segfault)."""

    def __init__(self, data: bytes, method):
        self.data, self.method = data, method

    def execute(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.method.execute(inputs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.method.metadata.input_tensor_meta(0).sizes())


def load(program: bytes | str | os.PathLike, what: str | None = None) -> Loaded:
    """The ``forward`` method of a ``.pte`` program (its bytes, or a file), ready to execute.
    A file ExecuTorch cannot load is a `PteError` naming it."""
    check_available()
    from executorch.runtime import Runtime

    what = what or (str(program) if not isinstance(program, bytes) else "the program")
    try:
        data = program if isinstance(program, bytes) else Path(program).read_bytes()
        with quiet_native():
            return Loaded(data, Runtime.get().load_program(data).load_method("forward"))
    except OSError as e:
        raise PteError(f"{what}: cannot read it ({e.strerror})") from None
    except Exception as e:  # noqa: BLE001 - the runtime raises RuntimeError/ValueError with native codes
        raise PteError(f"{what}: not a program ExecuTorch can load ({type(e).__name__}: "
                       f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else 'no detail'}); "
                       f"export it again with this ExecuTorch ({versions()['executorch']})") from None


class PteRunner(nn.Module):
    """A module exported to a ``.pte`` and run by ExecuTorch on this host; ``forward`` executes it.
    The torch module is kept (parameter counts)."""

    def __init__(self, module: nn.Module, x: torch.Tensor, threads: int, what: str = "the module"):
        super().__init__()
        self.module = module
        set_threads(threads)
        self.method = load(program_bytes(lower(module, x, what)), what)

    def forward(self, x: torch.Tensor):
        return self.method.execute([x])[0]


# ---------------------------------------------------------------------------- the phone round trip
PHONE_DIR = "/data/local/tmp/nas"
SCRIPT = "time_on_phone.sh"
MANIFEST = "manifest.csv"


def export_ops(ops: dict, out_dir: Path, device, resolution: int,
               progress: Callable[[int], None] | None = None):
    """One ``.pte`` per op (deploy form, batch 1, XNNPACK-delegated), the manifest (key, file,
    input shape) and the script that times them on a phone over adb. Programs already written are
    kept, so a killed export continues where it stopped (``lut.apple``'s contract)."""
    from lut import graph
    from lut.ondevice import export_each

    def write(op, x, path):
        data = program_bytes(lower(graph.deploy_module(op), x, f"op {op.key}"))
        io.atomic_write(path, lambda tmp: tmp.write_bytes(data))

    result = export_each(ops, out_dir, ".pte", write, progress)
    io.write_text(out_dir / SCRIPT, phone_script(device.name, device.threads))
    os.chmod(out_dir / SCRIPT, 0o755)
    return result


def phone_script(device: str, threads: int) -> str:
    """The shell script that times every ``.pte`` of its folder on a phone over adb with
    ExecuTorch's ``executor_runner`` (built with XNNPACK, pushed once), and writes timings.csv."""
    return f"""#!/bin/sh
# Time every .pte in this folder on an Android phone with ExecuTorch's executor_runner (XNNPACK).
#   1. build the runner for the phone once (ExecuTorch's docs: "Building with XNNPACK"), e.g.
#        cmake --preset android-arm64-v8a -DEXECUTORCH_BUILD_XNNPACK=ON && cmake --build ...
#      and push it:  adb push xnn_executor_runner {PHONE_DIR}/executor_runner
#   2. sh {SCRIPT}            (writes timings.csv here; then: nas lut import timings.csv --device {device})
# ADB, RUNNER, PHONE_DIR, THREADS, RUNS override the defaults (the test suite points ADB at this host).
set -eu
cd "$(dirname "$0")"
ADB="${{ADB:-adb}}"
PHONE_DIR="${{PHONE_DIR:-{PHONE_DIR}}}"
RUNNER="${{RUNNER:-$PHONE_DIR/executor_runner}}"
THREADS="${{THREADS:-{threads}}}"
RUNS="${{RUNS:-21}}"
$ADB shell "mkdir -p $PHONE_DIR"
echo "file,ms" > timings.csv.tmp
n=$(($(wc -l < {MANIFEST}) - 1)); i=0
tail -n +2 {MANIFEST} | while IFS=, read -r key file shape; do   # the columns export_ops writes
  i=$((i + 1))
  $ADB push "$file" "$PHONE_DIR/$file" > /dev/null
  # executor_runner logs "Iteration k of N: T ms" per execution; the first is a warm-up, the
  # median of the others is the op's time
  ms=$($ADB shell "$RUNNER --model_path $PHONE_DIR/$file --num_executions $RUNS --cpu_threads $THREADS \\
        --print_output none" 2>&1 | sed -n 's/.*Iteration \\([0-9]*\\) of [0-9]*: \\([0-9.]*\\) ms.*/\\1 \\2/p' \\
        | awk '$1 > 1 {{print $2}}' | sort -g | awk '{{v[NR]=$1}} END {{if (NR) print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}}')
  [ -n "$ms" ] || {{ echo "$file ($key): the runner printed no timing" >&2; exit 1; }}
  echo "$file,$ms" >> timings.csv.tmp
  $ADB shell "rm -f $PHONE_DIR/$file"
  echo "[$i/$n] $key: $ms ms"
done
mv timings.csv.tmp timings.csv
echo "wrote timings.csv: nas lut import timings.csv --device {device}"
"""


def how_to_time(out: Path) -> str:
    """How a user times an export's programs (what `nas lut export` tells them)."""
    return (f"sh {shlex.quote(str(out / SCRIPT))} with the phone on adb; push ExecuTorch's executor_runner built "
            f"with XNNPACK to {PHONE_DIR} first, the script says how")


def main(argv: list[str] | None = None) -> int:
    """A host-side ``executor_runner``: the same flags and the same "Iteration k of N: T ms" log
    lines, through ``executorch.runtime`` (time a ``.pte`` here; the round-trip test's phone)."""
    ap = argparse.ArgumentParser(prog="python -m lut.pte", description=main.__doc__)
    ap.add_argument("--model_path", required=True)
    ap.add_argument("--num_executions", type=int, default=1)
    ap.add_argument("--cpu_threads", type=int, default=1)
    ap.add_argument("--print_output", default="summary")
    args = ap.parse_args(argv)
    try:
        set_threads(max(args.cpu_threads, 1))
        method = load(args.model_path)
    except PteError as e:
        print(f"python -m lut.pte: error: {e}", file=sys.stderr)
        return 2
    x = torch.ones(method.input_shape)
    total = 0.0
    for i in range(args.num_executions):
        t0 = time.perf_counter_ns()
        out = method.execute([x])
        ms = (time.perf_counter_ns() - t0) / 1e6
        total += ms
        print(f"I executor_runner] Iteration {i + 1} of {args.num_executions}: {ms:.6f} ms", flush=True)
    print(f"I executor_runner] Model executed successfully {args.num_executions} time(s) in {total:.6f} ms.")
    if args.print_output != "none":
        print(f"OutputX 0: tensor(sizes={list(out[0].shape)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
