"""Deploy export of an ArchConfig: reparameterize, export to ONNX and/or Core ML, verify.

* ONNX: ``torch.onnx.export(dynamo=True)``, then verified with onnxruntime (CPU EP) against
  the torch deploy model on a fixed random input: max |diff| / max |torch| must be <= 1e-4.
* Core ML: ``torch.export`` -> ``run_decompositions({})`` -> ``coremltools.convert`` (ML program,
  iOS 16 target), saved as ``.mlpackage``. Running it needs macOS; there its outputs are compared
  too. On Linux the conversion and save are the check.

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
from supernets import io
from supernets.config import ArchConfig
from supernets.layers import reparameterize
from supernets.registry import get_family

FORMATS = ("onnx", "coreml")
RTOL = 1e-4


@dataclass
class Exported:
    format: str
    path: Path
    max_rel_diff: float | None   # None: not run here (Core ML off macOS)
    top1: tuple[float, float] | None = None   # (torch, exported) on the validation subset, when checked


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
    """Export a deploy-form model at `resolution`. With `val` (images, labels), ONNX Runtime's
    top-1 on those images must equal torch's, or nothing is written."""
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    done = []
    for fmt in formats:
        if fmt == "onnx":
            done.append(_onnx(model, x, ref, out_stem.with_name(out_stem.name + ".onnx"), val))
        elif fmt == "coreml":
            done.append(_coreml(model, x, ref, out_stem.with_name(out_stem.name + ".mlpackage")))
        else:
            raise UserError(f"--format {fmt!r}: unknown (use {', '.join(FORMATS)})")
    return done


def export_trained(path: str | os.PathLike, formats: list[str], out_stem: Path, *, resolution: int | None = None,
                   ema: bool = True, val_images: int = 1000, log=print) -> list[Exported]:
    """Export a model checkpoint (``nas train``'s model.pt, or the inherited weights slim writes):
    its EMA weights unless `ema` is False, reparameterized, at the resolution it was trained at
    (or `resolution` where the weights allow). ONNX is checked on `val_images` of the validation
    set of the data it was trained on, when that data is here."""
    from nas import data as data_mod
    from nas.train_model import load_trained, trained_data

    path = Path(path)
    model, config, ckpt, use_ema = load_trained(path, ema=ema, img_size=resolution)
    resolution = resolution or ckpt["img_size"]
    if resolution != config.resolution:
        log(f"note: exporting at {resolution} px (trained there); its latency was priced at the config's "
            f"{config.resolution} px: export with --resolution {config.resolution} to deploy that")
    val = None
    if "onnx" in formats and ckpt.get("data"):
        try:
            val = data_mod.fixed_subset(trained_data(ckpt, resolution).val, val_images, 1)
        except UserError as e:
            log(f"note: top-1 check skipped, the training data is not available here ({e})")
    log(f"exporting {path} ({'EMA' if use_ema else 'raw'} weights, {resolution} px)")
    return export_model(reparameterize(model).eval(), resolution, formats, out_stem, val=val)


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
    torch_pred = torch.cat([model(b).argmax(1) for b in images.split(64)])
    ort_pred = torch.tensor([int(np.argmax(session.run(None, {name: img[None].numpy()})[0])) for img in images])
    n = max(len(labels), 1)
    return 100.0 * float((torch_pred == labels).sum()) / n, 100.0 * float((ort_pred == labels).sum()) / n


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
