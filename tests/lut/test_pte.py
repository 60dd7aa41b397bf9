"""ExecuTorch with XNNPACK (lut.pte): ops and networks exported to .pte and run through
executorch.runtime, the xnnpack device, a phone's round trip over adb, and the errors a user meets."""
import csv
import os
import stat
import subprocess
import sys

import pytest
import torch

import search_spaces
from lut import backends, build, graph, measure, pte, store
from lut.table import LatencyTable
from nas.cli import main
from supernets.config import SearchSpace
from supernets.layers import ConvNorm, reparameterize

pytestmark = pytest.mark.skipif(pte.available() is not None, reason="ExecuTorch is not installed")


@pytest.fixture(scope="module")
def fastvit_ops():
    """The ops of FastViT's shipped small space at 64 px (keys `nas lut import` knows), smallest first."""
    space = SearchSpace.load(search_spaces.space_path("fastvit", "small")).replace(resolution=64)
    ops = build.space_ops(space, 10)
    return dict(sorted(ops.items(), key=lambda kv: (kv[1].in_shape[1], kv[0])))


@pytest.mark.slow
def test_ops_run_in_executorch_as_in_torch_and_are_timed(fastvit_ops):
    attention = next(op for op in fastvit_ops.values() if op.kind == "attention")
    items = measure.prepare([("conv", reparameterize(ConvNorm(8, 16, 3)), (1, 8, 12, 12)),
                             (attention.key, graph.deploy_module(attention), attention.in_shape)])
    runners = backends.runners(items, "executorch", threads=1)
    for (name, module, x), (rname, runner, rx) in zip(items, runners):
        assert rname == name and rx is x
        with torch.no_grad():
            ref = module(x)
            assert (runner(x) - ref).abs().max() <= 1e-4 * ref.abs().max()
    timed = measure.time_rounds(runners, num_threads=1, rounds=2, calls=3)
    assert all(t.ms > 0 and t.rounds == 2 for t in (*timed.cold.values(), *timed.hot.values()))
    # a conv is XNNPACK's whole: nothing is left to portable kernels
    edge = pte.lower(items[0][1], items[0][2])
    assert pte.undelegated(edge) == {}
    table = build.new_table("xnnpack", 64, 1, "executorch")
    assert table.environment["backend"] == "executorch" and table.environment["executorch"]


def test_a_program_that_does_not_load_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(pte.PteError, match="bad.pte: not a program ExecuTorch can load"):
        pte.load(bad)
    assert pte.main(["--model_path", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.pte" in err
    with pytest.raises(pte.PteError, match="cannot read it"):
        pte.load(tmp_path / "missing.pte")


def test_an_op_executorch_cannot_export_is_named_with_its_family(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported op in the graph")

    # broken inside the export, not `torch.export.export` itself: ExecuTorch's passes export their
    # own patterns once per process and would keep the failure for every later test
    monkeypatch.setattr(pte, "for_xnnpack", broken)
    tables = tmp_path / "tables"
    assert main(["lut", "build", "--device", "xnnpack", "--family", "fastvit", "--space", "small", "--resolution",
                 "64", "--tables", str(tables), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fastvit's op " in err and "ExecuTorch cannot export it" in err
    key = err.split("fastvit's op ")[1].split(":")[0]
    assert any(k.startswith(key) for k in build.space_ops(SearchSpace.load(
        search_spaces.space_path("fastvit", "small")).replace(resolution=64), 10))
    assert not any(p.is_file() for p in tables.rglob("*"))


def test_without_executorch_its_devices_say_which_extra_and_the_others_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pte, "available", lambda: f"ExecuTorch is not installed: {pte.INSTALL}")
    tables = tmp_path / "tables"
    assert main(["lut", "build", "--device", "xnnpack", "--family", "fastvit", "--tables", str(tables),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e '.[executorch]'" in err
    assert not tables.exists() or not any(tables.iterdir())
    from lut.devices import get_device

    assert get_device("xnnpack").unavailable_reason.startswith("ExecuTorch is not installed")
    assert get_device("cpu").measurable and get_device("onnxruntime").measurable
    from nas.export import all_formats

    assert all_formats() == ["onnx", "coreml"]


def _fake_adb(folder):
    """An `adb` that is this host: push copies, shell runs the command here."""
    adb = folder / "adb"
    adb.write_text('#!/bin/sh\ncmd=$1; shift\ncase $cmd in\n  push) mkdir -p "$(dirname "$2")"; cp "$1" "$2";;\n'
                   '  shell) sh -c "$*";;\n  *) exit 1;;\nesac\n')
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    return adb


@pytest.mark.slow
def test_a_phones_round_trip_export_time_over_adb_import(fastvit_ops, tmp_path, capsys):
    """A phone (devices.yaml, backend executorch) is timed there: `nas lut export` writes a .pte per
    op its table lacks and the adb script; the script runs with this host as the phone (a shell
    `adb`, and `python -m lut.pte`, which has executor_runner's flags and log lines, as the runner);
    `nas lut import` reads what it wrote, and the table then prices the whole space."""
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "devices.yaml").write_text("devices:\n  - {name: pixel8, backend: executorch, threads: 1}\n")
    keys = list(fastvit_ops)
    # the phone was timed for all but two ops already (each op left runs a fresh interpreter here)
    (tmp_path / "earlier.csv").write_text("key,ms\n" + "".join(f"{k},0.5\n" for k in keys[2:]))
    assert main(["lut", "import", str(tmp_path / "earlier.csv"), "--device", "pixel8", "--space", "small",
                 "--resolution", "64", "--tables", str(tables)]) == 0
    # it cannot be timed here
    assert main(["lut", "build", "--device", "pixel8", "--family", "fastvit", "--tables", str(tables)]) == 2
    assert "timed on the device itself" in capsys.readouterr().err
    out = tmp_path / "export"
    assert main(["lut", "export", "--device", "pixel8", "--family", "fastvit", "--space", "small", "--resolution",
                 "64", "--tables", str(tables), "--out", str(out), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "exporting 2 ExecuTorch programs" in said and "time_on_phone.sh" in said
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert sorted(r["key"] for r in rows) == sorted(keys[:2]) and all((out / r["file"]).is_file() for r in rows)
    env = {**os.environ, "ADB": str(_fake_adb(tmp_path)), "PHONE_DIR": str(tmp_path / "phone"), "RUNS": "5",
           "RUNNER": f"{sys.executable} -m lut.pte"}
    done = subprocess.run(["sh", str(out / "time_on_phone.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    timed = list(csv.DictReader(open(out / "timings.csv")))
    assert sorted(r["file"] for r in timed) == sorted(r["file"] for r in rows) and all(float(r["ms"]) > 0 for r in timed)
    assert not list((tmp_path / "phone").glob("*.pte"))       # the script cleans the phone up
    assert main(["lut", "import", str(out / "timings.csv"), "--device", "pixel8", "--space", "small", "--resolution",
                 "64", "--tables", str(tables)]) == 0
    table = LatencyTable.load(tables / "pixel8@64.yaml")
    assert set(keys) <= set(table.entries) and table.environment["on_device"] is True
    space = SearchSpace.load(search_spaces.space_path("fastvit", "small")).replace(resolution=64)
    assert store.coverage(table, ["fastvit"], "small", 10)["fastvit"] == (len(keys), len(keys))
    from supernets.registry import random_choice
    import random

    assert table.predict(random_choice(space, random.Random(0)).to_config(space, 10)) > 0
    # timings a user got wrong: one line, exit 2, the table untouched
    before = (tables / "pixel8@64.yaml").read_bytes()
    for text, says in ((f"key,ms\nnot-an-op,1.0\n", "unknown op key"), (f"key,ms\n{keys[0]},0\n", "positive time"),
                       (f"key,ms\n{keys[0]},-2\n", "positive time")):
        (tmp_path / "bad.csv").write_text(text)
        assert main(["lut", "import", str(tmp_path / "bad.csv"), "--device", "pixel8", "--space", "small",
                     "--resolution", "64", "--tables", str(tables)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err
    assert (tables / "pixel8@64.yaml").read_bytes() == before


def test_one_group_norms_are_lowered_in_two_passes_that_xnnpack_takes_whole():
    """ExecuTorch's portable group norm is one-pass (~2e-5 off per layer on a map with an offset);
    the rewrite computes the same norm, leaves the model itself alone, and is all XNNPACK's."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 32, 1), torch.nn.GroupNorm(1, 32), torch.nn.GroupNorm(4, 32)).eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-1, 1)
    rewritten = pte.for_xnnpack(model)
    assert isinstance(model[1], torch.nn.GroupNorm) and isinstance(rewritten[1], pte.TwoPassGroupNorm)
    assert isinstance(rewritten[2], torch.nn.GroupNorm)          # several groups: left as it is
    x = torch.randn(1, 8, 16, 16) * 3 + 2
    with torch.no_grad():
        ref = model(x)
        assert (rewritten(x) - ref).abs().max() <= 1e-5 * ref.abs().max()
    edge = pte.lower(model[:2], x)
    assert pte.undelegated(edge) == {}
    out = pte.load(pte.program_bytes(edge)).execute([x])[0]
    with torch.no_grad():
        assert (out - model[:2](x)).abs().max() <= 1e-5 * model[:2](x).abs().max()


@pytest.mark.parametrize("what", ["layer norm", "efficientformer mb3d", "efficientformer head", "mobilevit v2 attention"])
def test_blocks_that_left_ops_to_portable_kernels_are_now_xnnpacks_whole(what):
    """Each of these ran ops as ExecuTorch's portable kernels, a partition break apiece on a phone
    (experiments/executorch_delegation): layer norms (an XNNPACK rewrite), EfficientFormer's
    relative-bias gather and qkv split and its head's token mean, MobileViT v2's context sum. The
    lowered program is XNNPACK's alone and computes what torch does."""
    from supernets import efficientformer, mobilevitv3

    torch.manual_seed(0)
    module, shape = {
        "layer norm": (torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.LayerNorm(24)), (1, 10, 16)),
        "efficientformer mb3d": (efficientformer.Attention(32, (3, 3), key_dim=8, num_heads=2), (1, 9, 32)),
        "efficientformer head": (efficientformer.Head(32, 10, distillation=True), (1, 9, 32)),
        "mobilevit v2 attention": (mobilevitv3.LinearSelfAttention(16), (1, 16, 4, 9)),
    }[what]
    module = module.eval()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1, 1)
    x = torch.randn(shape) * 2 + 1
    edge = pte.lower(module, x, what)
    # a layout copy at the program's edge is ExecuTorch's own (as in every network it lowers)
    assert {op for op in pte.undelegated(edge) if op != "dim_order_ops._to_dim_order_copy"} == set()
    out = pte.load(pte.program_bytes(edge)).execute([x])[0]
    with torch.no_grad():
        ref = module(x)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
