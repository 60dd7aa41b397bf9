"""nas export: deploy form to ONNX (verified with onnxruntime) and Core ML (converted, saved)."""
import pytest
import torch

import search_spaces
from nas.cli import main
from supernets.config import ArchConfig, Choice
from tests.nas.conftest import ATTENTION_FAMILIES


@pytest.fixture
def small_config(tiny_space, tmp_path):
    cfg = Choice((32, 32, 48, 64), (("mb4d", "mb4d"), ("mb4d",), ("mb4d", "mb3d"), ("mb3d", "identity"))) \
        .to_config(tiny_space, 10)
    cfg.save(tmp_path / "small.yaml")
    return tmp_path / "small.yaml"


@pytest.mark.slow
def test_export_every_format_of_a_config_with_attention(small_config, capsys):
    from lut import pte

    assert main(["export", str(small_config)]) == 0
    out = capsys.readouterr().out
    onnx_path, ml_path = small_config.with_suffix(".onnx"), small_config.with_suffix(".mlpackage")
    assert onnx_path.is_file() and (ml_path / "Manifest.json").is_file()
    diff = float(out.split("onnxruntime max relative diff ")[1].split(")")[0])
    assert diff <= 1e-4
    if pte.available() is None:   # ExecuTorch: run here against torch, what XNNPACK leaves said
        line = next(x for x in out.splitlines() if x.startswith("pte: "))
        assert float(line.split("ExecuTorch max relative diff ")[1].split(";")[0]) <= 1e-4
        assert "left to portable kernels" in line or "every op delegated" in line
        assert pte.load(small_config.with_suffix(".pte")).execute([torch.randn(1, 3, 64, 64)])[0].shape == (1, 10)
    assert not [p for p in small_config.parent.iterdir() if p.name.startswith(".")]


def test_export_with_weights_and_resolution(small_config, tmp_path, capsys):
    from supernets.registry import get_family

    cfg = ArchConfig.load(small_config)
    state = get_family(cfg.family).build(cfg).state_dict()
    torch.save(state, tmp_path / "w.pt")
    assert main(["export", str(small_config), "--format", "onnx", "--weights", str(tmp_path / "w.pt")]) == 0
    assert main(["export", str(small_config), "--format", "onnx", "--resolution", "96"]) == 0
    assert (tmp_path / "small.onnx").is_file() and (tmp_path / "small@96.onnx").is_file()
    # the attention-bias table is sized for the grid: 64 px weights are resampled for a 96 px model
    assert main(["export", str(small_config), "--format", "onnx", "--weights", str(tmp_path / "w.pt"),
                 "--resolution", "96", "--out", str(tmp_path / "w96")]) == 0
    assert (tmp_path / "w96.onnx").is_file()


def test_export_errors_leave_nothing_behind(small_config, tmp_path, capsys, monkeypatch):
    assert main(["export", str(small_config), "--resolution", "100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    torch.save({"nope": torch.zeros(1)}, tmp_path / "bad.pt")
    assert main(["export", str(small_config), "--weights", str(tmp_path / "bad.pt")]) == 2
    assert "does not match the config" in capsys.readouterr().err
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 4)          # not a pickle at all
    torch.save([torch.zeros(1)], tmp_path / "list.pt")                      # loads, but is no state dict
    for name, says in (("random.pt", "cannot load a state dict (UnpicklingError)"), ("list.pt", "holds no state dict")):
        assert main(["export", str(small_config), "--weights", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err

    def broken(*args, **kwargs):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(torch.onnx, "export", broken)
    assert main(["export", str(small_config), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not trace" in err
    monkeypatch.setattr(torch.export, "export", broken)
    assert main(["export", str(small_config), "--format", "pte"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("ExecuTorch cannot export it" in err or "ExecuTorch is not installed" in err)
    assert sorted(p.name for p in small_config.parent.iterdir()) == ["bad.pt", "list.pt", "random.pt", "small.yaml",
                                                                    "tiny_space.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("family, variant", [("efficientformer", "l1"), ("fastvit", "sa12")])
def test_a_published_variant_of_each_family_exports(family, variant, tmp_path):
    from nas import export

    out = tmp_path / variant
    onnx, coreml = export.export(ArchConfig.load(search_spaces.variant_path(family, variant)), ["onnx", "coreml"], out)
    assert onnx.path == out.with_suffix(".onnx") and onnx.path.is_file() and coreml.path.is_dir()
    assert onnx.max_rel_diff <= 1e-4


def test_the_resolution_check_warns_when_top1_falls_and_names_the_fine_tuning():
    from nas.export import ResolutionCheck

    fell = ResolutionCheck(64, 94.99, 224, 11.98).lines("m.pt")
    assert fell[0] == ("top-1 on the validation subset (torch): 94.99% at 64 px (trained there), 11.98% at 224 px "
                       "(exported)")
    assert fell[1].startswith("warning: top-1 falls 83.0 points at 224 px") and "nas train m.pt --img-size 224" in fell[1]
    assert len(ResolutionCheck(64, 90.0, 224, 87.5).lines("m.pt")) == 1      # within the subset's noise: no warning
    assert len(ResolutionCheck(64, 90.0, 224, 86.5).lines("m.pt")) == 2


def _resolution_check(printed: str) -> tuple[float, float]:
    line = next(x for x in printed.splitlines() if x.startswith("top-1 on the validation subset (torch)"))
    trained, exported = (float(part.split("% at ")[0].split()[-1]) for part in line.split(", "))
    return trained, exported


@pytest.mark.parametrize("family", ATTENTION_FAMILIES)
def test_a_model_trained_below_its_deploy_resolution_exports_there_with_top1_at_both(attention_models, family,
                                                                                      tmp_path, capsys):
    from nas.export import RESOLUTION_DROP_WARN

    # 40 images: the check is that both resolutions are reported and torch agrees with onnxruntime
    # on the same subset, not the accuracy itself (each image costs three 224 px forward passes)
    assert main(["export", str(attention_models[family]), "--format", "onnx", "--resolution", "224",
                 "--val-images", "40", "--out", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    trained, exported = _resolution_check(printed)
    assert ("warning: top-1 falls" in printed) == (trained - exported > RESOLUTION_DROP_WARN)
    torch_top1, ort_top1 = printed.split("torch ")[-1].split("%, onnxruntime ")
    assert float(torch_top1) == exported == float(ort_top1.split("%")[0])     # the same 224 px model and subset
    assert (tmp_path / "m.onnx").is_file()


@pytest.mark.slow
def test_the_journey_fine_tunes_at_the_deploy_resolution_and_exports_there(tmp_path, capsys):
    """README "From search to a deployed model": a model trained at 32 px is fine-tuned at the
    resolution its latency is priced at (`nas train model.pt --img-size R`), then evaluates and
    exports there without a word about resolution. (R is 96 px here, 224 px in the README: the
    same steps at a ninth of the pixels.)"""
    from nas import checkpoint
    from nas.train_model import train_config
    from tests.nas.conftest import attention_config

    attention_config("efficientformer", resolution=96).save(tmp_path / "ef.yaml")
    small = train_config(tmp_path / "ef.yaml", out_dir=tmp_path / "train" / "ef", img_size=32, epochs=1,
                         batch_size=64, progress=False, log=lambda line: None).path
    assert main(["eval", str(small), "--tables", str(tmp_path / "tables"), "--no-progress"]) == 0
    assert f"nas train {small} --img-size 96" in capsys.readouterr().out          # the eval names the step
    assert main(["train", str(small), "--img-size", "96", "--epochs", "1", "--batch-size", "64", "--no-progress"]) == 0
    tuned = tmp_path / "train" / "ef-96px" / "model.pt"
    ckpt = checkpoint.load(tuned, (checkpoint.MODEL_FORMAT,))
    assert ckpt["img_size"] == 96 and ckpt["recipe"]["init"] == str(small)
    capsys.readouterr()
    assert main(["eval", str(tuned), "--tables", str(tmp_path / "tables"), "--no-progress"]) == 0
    assert "note: trained at" not in capsys.readouterr().out
    assert main(["export", str(tuned), "--format", "onnx", "--val-images", "100", "--out", str(tmp_path / "t")]) == 0
    printed = capsys.readouterr().out
    assert "96 px)" in printed and "priced at" not in printed and "top-1 on the validation subset (torch)" not in printed
