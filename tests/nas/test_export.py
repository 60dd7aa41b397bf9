"""nas export: deploy form to ONNX (verified with onnxruntime) and Core ML (converted, saved)."""
import pytest
import torch

import search_spaces
from nas.cli import main
from supernets.config import ArchConfig, Choice


@pytest.fixture
def small_config(tiny_space, tmp_path):
    cfg = Choice((32, 32, 48, 64), (("mb4d", "mb4d"), ("mb4d",), ("mb4d", "mb3d"), ("mb3d", "identity"))) \
        .to_config(tiny_space, 10)
    cfg.save(tmp_path / "small.yaml")
    return tmp_path / "small.yaml"


def test_export_onnx_and_coreml_of_a_config_with_attention(small_config, capsys):
    assert main(["export", str(small_config)]) == 0
    out = capsys.readouterr().out
    onnx_path, ml_path = small_config.with_suffix(".onnx"), small_config.with_suffix(".mlpackage")
    assert onnx_path.is_file() and (ml_path / "Manifest.json").is_file()
    diff = float(out.split("max relative diff ")[1].split(")")[0])
    assert diff <= 1e-4
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
