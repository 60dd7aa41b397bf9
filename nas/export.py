"""Deploy export of an ArchConfig: reparameterize, export to ONNX, Core ML and/or ExecuTorch, verify.

* ONNX: ``torch.onnx.export(dynamo=True)``, then verified with onnxruntime (CPU EP) against
  the torch deploy model on a fixed random input: max |diff| / max |torch| must be <= 1e-4.
* Core ML: ``torch.export`` -> ``run_decompositions({})`` -> ``coremltools.convert`` (ML program,
  iOS 16 target), saved as ``.mlpackage``. Running it needs macOS; there its outputs are compared
  too. On Linux the conversion and save are the check.
* ExecuTorch (``.pte``, XNNPACK-delegated: Android, embedded Linux, iOS CPU): ``lut.pte``; run by
  ``executorch.runtime`` here against torch (relative 1e-4), and with a checkpoint's data its
  top-1 on the validation subset must equal torch's. The ops XNNPACK does not take are reported.

Every artefact is written to a temporary sibling and renamed into place, so a failed export
leaves nothing behind.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nas import checkpoint
from nas.errors import UserError
from nas.core import io
from supernets.config import ArchConfig
from supernets.layers import reparameterize
from supernets.registry import get_family

FORMATS = ("onnx", "coreml", "pte")
RTOL = 1e-4


@dataclass
class Exported:
    format: str
    path: Path
    max_rel_diff: float | None   # None: not run here (Core ML off macOS)
    top1: tuple[float, float] | None = None   # (torch, exported) on the validation subset, when checked
    note: str = ""   # what else the user should know (ExecuTorch: the ops left to portable kernels)


def all_formats() -> list[str]:
    """What ``--format all`` writes: every format, ExecuTorch's where it is installed."""
    from lut import pte

    return [f for f in FORMATS if f != "pte" or pte.available() is None]


def deploy_model(config: ArchConfig, weights: str | os.PathLike | None = None) -> torch.nn.Module:
    model = get_family(config.family).build(config)
    if weights is not None:
        state = checkpoint.load_state_dict_file(weights, "--weights")
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:   # shape mismatches (another width, or a resolution-sized table)
            raise UserError(f"--weights {weights}: does not match the config ("
                            f"{str(e).splitlines()[-1].strip()[:160]})") from None
        if missing or unexpected:
            raise UserError(f"--weights {weights}: does not match the config ({len(missing)} missing, "
                            f"{len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[0]})")
    return reparameterize(model.eval()).eval()


def export(config: ArchConfig, formats: list[str], out_stem: Path, *, weights=None) -> list[Exported]:
    """Write `out_stem` + ".onnx" / ".mlpackage" (a stem such as "x@cpu-1.5ms" keeps its dots)."""
    return export_model(deploy_model(config, weights), config.resolution, formats, out_stem)


def export_model(model: torch.nn.Module, resolution: int, formats: list[str], out_stem: Path, *,
                 val: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[Exported]:
    """Export a deploy-form model at `resolution`. With `val` (images, labels), ONNX Runtime's and
    ExecuTorch's top-1 on those images must equal torch's, or nothing is written."""
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    done = []
    for fmt in formats:
        if fmt == "onnx":
            done.append(_onnx(model, x, ref, out_stem.with_name(out_stem.name + ".onnx"), val))
        elif fmt == "coreml":
            done.append(_coreml(model, x, ref, out_stem.with_name(out_stem.name + ".mlpackage")))
        elif fmt == "pte":
            done.append(_pte(model, x, ref, out_stem.with_name(out_stem.name + ".pte"), val))
        else:
            raise UserError(f"--format {fmt!r}: unknown (use {', '.join(FORMATS)})")
    return done


# A drop of top-1 (points) between the training and the export resolution that export warns about:
# beyond the ~1-point noise of a 1,000-image subset, the model is no longer the one trained.
RESOLUTION_DROP_WARN = 3.0


@dataclass(frozen=True)
class ResolutionCheck:
    """Torch top-1 (%) of a trained model on one validation subset, at the resolution it was
    trained at and at the one it is exported at."""
    trained_px: int
    trained_top1: float
    export_px: int
    export_top1: float

    @property
    def drop(self) -> float:
        return self.trained_top1 - self.export_top1

    def lines(self, model_path) -> list[str]:
        from nas.train_model import finetune_hint

        out = [f"top-1 on the validation subset (torch): {self.trained_top1:.2f}% at {self.trained_px} px (trained "
               f"there), {self.export_top1:.2f}% at {self.export_px} px (exported)"]
        if self.drop > RESOLUTION_DROP_WARN:
            out.append(f"warning: top-1 falls {self.drop:.1f} points at {self.export_px} px: the model does not carry "
                       f"across this change of resolution; fine-tune it there before deploying "
                       f"({finetune_hint(model_path, self.export_px)}) and export that model")
        return out


def export_trained(path: str | os.PathLike, formats: list[str], out_stem: Path, *, resolution: int | None = None,
                   ema: bool = True, val_images: int = 1000, log=print) -> list[Exported]:
    """Export a model checkpoint (``nas train``'s model.pt, or the inherited weights slim writes):
    its EMA weights unless `ema` is False, reparameterized, at the resolution it was trained at
    (or `resolution` where the weights allow). When the data it was trained on is here, ONNX is
    checked on `val_images` of its validation set, and an export at another resolution than the
    training one reports top-1 at both (``ResolutionCheck``), warning when it falls."""
    from nas import data as data_mod
    from nas.train_model import load_trained, trained_data

    path = Path(path)
    model, config, ckpt, use_ema = load_trained(path, ema=ema, img_size=resolution)
    trained_px = ckpt["img_size"]
    resolution = resolution or trained_px
    if resolution != config.resolution:
        log(f"note: exporting at {resolution} px; its latency was priced at the config's {config.resolution} px: "
            f"export with --resolution {config.resolution} to deploy that")
    val = None
    checked = "onnx" in formats or "pte" in formats   # formats whose top-1 is checked here
    if ckpt.get("data") and (checked or resolution != trained_px):
        try:
            val = data_mod.fixed_subset(trained_data(ckpt, resolution).val, val_images, 1)
        except UserError as e:
            log(f"note: top-1 checks skipped, the training data is not available here ({e})")
    log(f"exporting {path} ({'EMA' if use_ema else 'raw'} weights, {resolution} px)")
    deployed = reparameterize(model).eval()
    if val is not None and resolution != trained_px:
        trained = load_trained(path, ema=use_ema)[0]
        at_trained = data_mod.fixed_subset(trained_data(ckpt, trained_px).val, val_images, 1)
        check = ResolutionCheck(trained_px, _top1(trained, *at_trained), resolution, _top1(deployed, *val))
        for line in check.lines(path):
            log(line)
    return export_model(deployed, resolution, formats, out_stem, val=val if checked else None)


@torch.no_grad()
def _top1(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    pred = torch.cat([model(b).argmax(1) for b in images.split(64)])
    return 100.0 * float((pred == labels).sum()) / max(len(labels), 1)


def _rel_diff(out: np.ndarray, ref: torch.Tensor) -> float:
    ref_np = ref.detach().numpy()
    return float(np.abs(out - ref_np).max() / max(np.abs(ref_np).max(), 1e-12))


def _onnx(model, x, ref, path: Path, val=None) -> Exported:
    import onnxruntime as ort

    with io.atomic_path(path) as tmp:
        try:
            # One self-contained file (weights inline): external data would be named after the temp file.
            torch.onnx.export(model, (x,), str(tmp), input_names=["image"], output_names=["logits"],
                              dynamo=True, external_data=False, verbose=False)
        except Exception as e:  # noqa: BLE001 - the exporter raises many types; the user needs one line
            raise UserError(f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                            "the config's deploy model does not trace") from None
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        diff = _rel_diff(out, ref)
        if diff > RTOL:
            raise UserError(f"ONNX export of {path.name} differs from torch by {diff:.2e} (relative, > {RTOL}); "
                            "not written")
        top1 = None if val is None else _top1_pair(model, session, *val)
        if top1 is not None and top1[0] != top1[1]:
            raise UserError(f"ONNX export of {path.name}: top-1 {top1[1]:.2f}% on the validation subset, torch "
                            f"{top1[0]:.2f}%; not written")
    return Exported("onnx", path, diff, top1)


@torch.no_grad()
def _top1_pair(model, session, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 (%) of the torch model and of the ONNX Runtime session on the same images (the
    export has batch 1, so ONNX Runtime sees them one at a time)."""
    name = session.get_inputs()[0].name
    return _top1_of(model, lambda img: session.run(None, {name: img[None].numpy()})[0], images, labels)


@torch.no_grad()
def _top1_of(model, run_one, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 (%) of the torch model and of an exported one (`run_one(image)` -> logits, batch 1)."""
    pred = torch.tensor([int(np.argmax(np.asarray(run_one(img)))) for img in images])
    return _top1(model, images, labels), 100.0 * float((pred == labels).sum()) / max(len(labels), 1)


def _pte(model, x, ref, path: Path, val=None) -> Exported:
    from lut import pte

    edge = pte.lower(model, x, "the deploy model")
    data = pte.program_bytes(edge)
    method = pte.load(data, path.name)
    diff = _rel_diff(method.execute([x])[0].numpy(), ref)
    if diff > RTOL:
        raise UserError(f"ExecuTorch export of {path.name} differs from torch by {diff:.2e} (relative, > {RTOL}); "
                        "not written")
    top1 = None if val is None else _top1_of(model, lambda img: method.execute([img[None].contiguous()])[0], *val)
    if top1 is not None and top1[0] != top1[1]:
        raise UserError(f"ExecuTorch export of {path.name}: top-1 {top1[1]:.2f}% on the validation subset, torch "
                        f"{top1[0]:.2f}%; not written")
    io.atomic_write(path, lambda tmp: tmp.write_bytes(data))
    left = pte.undelegated(edge)
    note = ("every op delegated to XNNPACK" if not left else "left to portable kernels (not XNNPACK): "
            + ", ".join(f"{op} x{n}" for op, n in left.most_common()))
    return Exported("pte", path, diff, top1, note)


def _coreml(model, x, ref, path: Path) -> Exported:
    from lut.apple import mlprogram, save_mlpackage

    try:
        mlmodel = mlprogram(model, x, input_name="image")
    except Exception as e:  # noqa: BLE001 - torch.export/coremltools raise many types
        raise UserError(f"Core ML export failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                        "the config's deploy model does not trace") from None
    diff = None
    if platform.system() == "Darwin":
        out = mlmodel.predict({"image": x.numpy()})
        diff = _rel_diff(np.asarray(next(iter(out.values()))), ref)
    save_mlpackage(mlmodel, path)
    return Exported("coreml", path, diff)
