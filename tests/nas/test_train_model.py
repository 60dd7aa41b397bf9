"""nas train: an emitted config trained as a standalone model, from inherited weights or scratch."""
import csv
import os
import subprocess
import sys

import pytest
import torch

from nas import checkpoint
from nas.cli import main
from nas.errors import RecipeChangeError
from nas.session import SupernetSession
from nas.train_model import resume_training, train_config
from supernets.config import ArchConfig
from tests.conftest import kill_during_second_epoch
from tests.nas.conftest import ATTENTION_FAMILIES


@pytest.fixture(scope="module")
def emitted(tiny_run, tmp_path_factory):
    """A config slimmed from the tiny EfficientFormer supernet (shipped iphone12 cost model), with
    the inherited weights slim writes next to it."""
    out = tmp_path_factory.mktemp("slim")
    session = SupernetSession.open(supernet=tiny_run, device="iphone12", tables_dir=out / "tables", progress=False)
    (config,) = session.slim([0.485], out).configs
    return config


def _train(config, out, **fields):
    """`nas train` as a library call (`nas.train_model.train_config`), quietly: the lines it logged."""
    lines = []
    train_config(config, out_dir=out, progress=False, log=lines.append, **fields)
    return lines


def _metrics(folder):
    return list(csv.DictReader(open(folder / "metrics.csv")))


def test_slim_writes_the_inherited_weights_of_what_it_scored(emitted):
    ckpt = checkpoint.load(emitted.with_suffix(".pt"), (checkpoint.MODEL_FORMAT,))
    assert ArchConfig.from_dict(ckpt["config"]) == ArchConfig.load(emitted)
    assert ckpt["img_size"] == 32 and ckpt["data"] == "digits"


def test_inherited_training_starts_at_the_accuracy_slim_reported(emitted, tmp_path, capsys):
    out = tmp_path / "inherited"
    assert main(["train", str(emitted), "--init", "inherited", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = _metrics(out)
    slim_top1 = ArchConfig.load(emitted).meta["inherited_top1"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert abs(float(rows[0]["val_top1"]) - slim_top1) <= 1.0
    for key in ("train_loss", "val_top1", "val_top5", "ema_top1", "lr", "samples_per_s"):
        assert rows[-1][key] not in ("", "nan"), key
    assert float(rows[-1]["val_top5"]) >= float(rows[-1]["val_top1"])
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "final top-1: raw" in printed and "EMA" in printed
    ckpt = checkpoint.load(out / "model.pt", (checkpoint.MODEL_FORMAT,))
    assert ckpt["complete"] and ckpt["ema"] is not None and ckpt["epoch"] == 2
    # scratch, same config and epochs, starts near chance
    _train(emitted, tmp_path / "scratch", epochs=1)
    assert float(_metrics(tmp_path / "scratch")[0]["val_top1"]) < 40


def test_init_from_the_supernet_file_equals_the_inherited_weights(emitted, tiny_run, tmp_path):
    _train(emitted, tmp_path / "a", init=str(tiny_run), epochs=1)
    _train(emitted, tmp_path / "b", init="inherited", epochs=1)
    a, b = (checkpoint.load(tmp_path / n / "model.pt", (checkpoint.MODEL_FORMAT,)) for n in "ab")
    assert _metrics(tmp_path / "a")[0]["val_top1"] == _metrics(tmp_path / "b")[0]["val_top1"]
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name


def _train_cmd(config, out, *extra):
    return [sys.executable, "-m", "nas.cli", "train", str(config), "--epochs", "3", "--batch-size", "32",
            "--mixup", "0.2", "--threads", "1", "--out", str(out), "--no-progress", *extra]


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(emitted, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ckpt = tmp_path / "killed" / "model.pt"
    kill_during_second_epoch(_train_cmd(emitted, tmp_path / "killed"), ckpt, beside=_train_cmd(emitted, tmp_path / "straight"))
    assert checkpoint.load(ckpt, (checkpoint.MODEL_FORMAT,))["epoch"] < 3, "the run finished before it was killed"
    for name in ("model.pt", "curves.png"):   # as a kill mid-write leaves them
        (ckpt.parent / f".{name}.x1y2.tmp").write_bytes(b"half a file")
    subprocess.run([sys.executable, "-m", "nas.cli", "train", "--resume", str(tmp_path / "killed"), "--threads", "1",
                    "--no-progress"],
                   check=True, env=env, capture_output=True)
    a, b = (checkpoint.load(tmp_path / n / "model.pt", (checkpoint.MODEL_FORMAT,)) for n in ("straight", "killed"))
    assert b["epoch"] == 3 and b["complete"]
    assert not list(ckpt.parent.glob(".*.tmp")), "the resume left a stale temp file"
    for key in ("state_dict", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key} {name}"
    assert [r["val_top1"] for r in a["history"]] == [r["val_top1"] for r in b["history"]]


def test_exported_onnx_has_the_trained_models_top1(emitted, tmp_path, capsys):
    out = tmp_path / "m"
    _train(emitted, out, init="inherited", epochs=1)
    assert main(["export", str(out / "model.pt"), "--format", "onnx", "--val-images", "200"]) == 0
    printed = capsys.readouterr().out
    torch_top1, ort_top1 = printed.split("torch ")[1].split("%, onnxruntime ")
    assert float(torch_top1) == float(ort_top1.split("%")[0]) > 10   # better than chance
    assert "EMA weights" in printed and (out / "model.onnx").is_file()
    assert main(["export", str(out / "model.pt"), "--format", "onnx", "--no-ema", "--out", str(tmp_path / "raw")]) == 0
    assert "raw weights" in capsys.readouterr().out
    assert main(["eval", str(out / "model.pt"), "--tables", str(tmp_path / "tables")]) == 0
    shown = capsys.readouterr().out
    assert "top-1" in shown and "top-5" in shown and "ms predicted" in shown and "params:" in shown


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_distillation_from_the_supernet(emitted, tiny_run, tmp_path, capsys, kind):
    out = tmp_path / kind
    _train(emitted, out, init="inherited", epochs=1, teacher=str(tiny_run), distill=kind)
    ckpt = checkpoint.load(out / "model.pt", (checkpoint.MODEL_FORMAT,))
    # EfficientFormer trains its distillation head on the teacher, initialised from the class head
    assert ckpt["config"]["head"]["distillation"] is True
    assert any(k.startswith("head.head_dist.") for k in ckpt["state_dict"])
    assert float(_metrics(out)[-1]["val_top1"]) > 10   # better than chance
    assert main(["export", str(out / "model.pt"), "--format", "onnx"]) == 0


def test_bf16_autocast_trains_on_the_cpu(emitted, tmp_path):
    _train(emitted, tmp_path / "bf16", epochs=1, amp="bf16", device="cpu", channels_last=True)
    assert float(_metrics(tmp_path / "bf16")[-1]["train_loss"]) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_with_bf16(emitted, tmp_path):
    _train(emitted, tmp_path / "cuda", epochs=1, device="cuda", amp="bf16", channels_last=True)
    assert float(_metrics(tmp_path / "cuda")[-1]["val_top1"]) > 20


def _fails(capsys, argv, *fragments):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("nas: error: "), err
    for f in fragments:
        assert f in err, err


def test_bad_input_is_one_line_and_leaves_no_model(emitted, tiny_fastvit_run, tmp_path, capsys):
    out = tmp_path / "out"
    base = [str(emitted), "--epochs", "1", "--out", str(out), "--no-progress"]
    broken = tmp_path / "broken.yaml"
    broken.write_text(emitted.read_text().replace("mb4d", "mb5d", 1))
    _fails(capsys, ["train", str(broken), "--out", str(out)], "unknown block kind 'mb5d'")
    wrong = tmp_path / "wrong.pt"
    ckpt = checkpoint.load(emitted.with_suffix(".pt"), (checkpoint.MODEL_FORMAT,))
    ckpt["state_dict"] = {k: (v[:-1] if k == "stem.conv1.conv.weight" else v) for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, wrong)
    _fails(capsys, ["train", *base, "--init", str(wrong)], "stem.conv1.conv.weight")
    _fails(capsys, ["train", *base, "--init", str(tiny_fastvit_run)], "fastvit supernet cannot initialise")
    _fails(capsys, ["train", *base, "--teacher", "no_such_model_xyz", "--distill", "hard"], "neither a checkpoint")
    _fails(capsys, ["train", *base, "--teacher", "resnet18", "--distill", "hard"], "--teacher-weights")
    _fails(capsys, ["train", *base, "--teacher", str(emitted.with_suffix(".pt"))], "go together")
    _fails(capsys, ["train", *base, "--amp", "fp16", "--device", "cpu"], "fp16 needs a GPU")
    if not torch.cuda.is_available():
        _fails(capsys, ["train", *base, "--device", "cuda"], "no CUDA device")
    _fails(capsys, ["train", *base, "--data", f"fashion-mnist:{tmp_path / 'none'}"], "apt-get install dataset-fashion-mnist")
    _fails(capsys, ["eval", str(emitted)], "not a nas checkpoint")
    assert not out.exists()


@pytest.mark.slow   # the fast tier's attention tests export a small-trained model at 224 px
def test_weights_trained_small_export_and_train_at_another_resolution(tiny_space, tmp_path, capsys):
    """EfficientFormer's attention-bias table is sized by the token grid: weights from 32 px are
    resampled (bicubic over the offset grid) when a model is built at 224 px or trained at 64 px."""
    from supernets.config import Choice
    from supernets.registry import get_family
    from tests.conftest import randomise

    cfg = Choice((32, 32, 48, 64), (("mb4d", "mb4d"), ("mb4d",), ("mb4d", "mb3d"), ("mb3d", "identity"))) \
        .to_config(tiny_space, 10).replace(resolution=224)
    cfg.save(tmp_path / "attn.yaml")
    small = randomise(get_family(cfg.family).build(cfg, img_size=32))
    checkpoint.save_model(tmp_path / "attn.pt", cfg, small, 32, data="digits")
    assert main(["export", str(tmp_path / "attn.pt"), "--format", "onnx", "--resolution", "224",
                 "--val-images", "20", "--out", str(tmp_path / "at224")]) == 0
    printed = capsys.readouterr().out
    torch_top1, ort_top1 = printed.split("torch ")[1].split("%, onnxruntime ")
    assert float(torch_top1) == float(ort_top1.split("%")[0]) and (tmp_path / "at224.onnx").is_file()
    big = get_family(cfg.family).build(cfg, img_size=224)
    checkpoint.load_weights(big, small.state_dict(), "test")
    table = big.stages[3].blocks[0].token_mixer.attention_biases          # 2x2 grid -> 7x7 grid
    assert table.shape == (8, 49)
    corner = small.state_dict()["stages.3.blocks.0.token_mixer.attention_biases"]
    assert torch.allclose(table.mean(1), corner.mean(1), atol=0.3)       # resampled, not re-initialised
    logged = _train(tmp_path / "attn.yaml", tmp_path / "at64", init="inherited", img_size=64, epochs=1)
    assert any("trained at 32 px, training goes on at 64 px" in line for line in logged)


def test_training_on_an_image_folder_takes_its_classes(emitted, digit_folder, tmp_path, capsys):
    out = tmp_path / "folder"
    _train(emitted, out, data=str(digit_folder), img_size=32, epochs=1, batch_size=8, workers=2)
    ckpt = checkpoint.load(out / "model.pt", (checkpoint.MODEL_FORMAT,))
    assert ckpt["config"]["num_classes"] == 3 and ckpt["state_dict"]["head.head.weight"].shape[0] == 3
    # the inherited 10-class head does not fit 3 classes: named, one line
    _fails(capsys, ["train", str(emitted), "--init", "inherited", "--data", str(digit_folder), "--out",
                    str(tmp_path / "x")], "head.head.weight")


def test_checkpoints_missing_what_nas_writes_are_one_line(emitted, tiny_run, tmp_path, capsys):
    model = checkpoint.load(emitted.with_suffix(".pt"), (checkpoint.MODEL_FORMAT,))
    torch.save({k: v for k, v in model.items() if k != "img_size"}, tmp_path / "m.pt")
    _fails(capsys, ["eval", str(tmp_path / "m.pt")], "lacks img_size")
    sup = checkpoint.load(tiny_run)
    torch.save({k: v for k, v in sup.items() if k != "recipe"}, tmp_path / "s.pt")
    _fails(capsys, ["show", str(tmp_path / "s.pt")], "lacks recipe")
    sup["state_dict"] = {k: v for k, v in sup["state_dict"].items() if "head" not in k}
    torch.save(sup, tmp_path / "s2.pt")
    _fails(capsys, ["show", str(tmp_path / "s2.pt")], "its space and weights disagree")


def test_resume_refuses_recipe_flags_it_would_ignore(emitted, tiny_run, tmp_path, capsys):
    _fails(capsys, ["train-supernet", "--resume", str(tiny_run.parent), "--lr", "0.5"],
           "--lr 0.5 differs from its 0.002")
    _fails(capsys, ["train-supernet", "--resume", str(tiny_run.parent), "--mixing", "hard"], "--mixing hard differs")
    out = tmp_path / "m"
    _train(emitted, out, epochs=1)
    with pytest.raises(RecipeChangeError, match="seed 3 differs from the run's 0"):   # the library names the field
        resume_training(out, seed=3, progress=False)
    _fails(capsys, ["train", "--resume", str(out), "--seed", "3"], "--seed 3 differs from its 0")
    _fails(capsys, ["train", "--resume", str(out), "--smoothing", "0.2"], "--smoothing 0.2 differs from its 0.1")
    _fails(capsys, ["train", "--resume", str(out), "--init", "inherited"], "--init inherited differs")
    before = (out / "model.pt").read_bytes()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0   # runtime flags may change
    assert (out / "model.pt").read_bytes() != before



@pytest.mark.parametrize("family", ATTENTION_FAMILIES)
def test_eval_of_a_model_with_attention_trained_below_its_deploy_resolution(attention_models, family, tmp_path,
                                                                           capsys):
    """Top-1/top-5 at the 32 px it was trained at; params, MACs and latency of the 224 px network it
    deploys as (EfficientFormer's attention-bias tables are sized by that grid)."""
    from lut import graph
    from nas.train_model import build_model, evaluate_trained
    from supernets.layers import count_params, reparameterize
    from supernets.registry import get_family

    path = attention_models[family]
    assert main(["eval", str(path), "--tables", str(tmp_path / "tables"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "32 px): top-1" in printed and "G (at the deploy resolution, 224 px)" in printed
    assert "note: trained at 32 px, priced at 224 px" in printed and f"nas train {path} --img-size 224" in printed
    assert ("SiLU/HardSwish:" in printed) == (family == "mobilevitv3")     # on the estimated iphone12 table
    r = evaluate_trained(path, tables_dir=tmp_path / "tables", progress=False)
    assert (r["img_size"], r["resolution"]) == (32, 224) and 0 <= r["top1"] <= r["top5"] <= 100
    assert r["latency_ms"] > 0
    config = checkpoint.model_config(checkpoint.load(path, (checkpoint.MODEL_FORMAT,)), path)
    assert r["params_train"] == count_params(get_family(family).build(config))          # built at 224 px
    trained = build_model(checkpoint.load(path, (checkpoint.MODEL_FORMAT,)), path)      # built at 32 px
    macs_32 = graph.macs(reparameterize(trained), torch.zeros(1, 3, 32, 32))
    assert r["macs"] >= 40 * macs_32          # 49x the pixels (convs scale by 49, attention by more)
    if family == "efficientformer":           # bias tables of a 7x7 grid, not 1x1
        assert r["params_train"] > count_params(trained)
