import pytest
import torch

from lut import backends, build, graph, measure
from lut.table import LatencyTable
from supernets.layers import ConvNorm, reparameterize


def _items():
    return measure.prepare([("conv", reparameterize(ConvNorm(8, 16, 3)), (1, 8, 12, 12)),
                            ("pool", torch.nn.AdaptiveAvgPool2d(1), (1, 8, 12, 12))])


def test_onnxruntime_runners_compute_what_torch_does_and_are_timed():
    items = _items()
    runners = backends.runners(items, "onnxruntime", threads=1)
    for (name, module, x), (rname, runner, rx) in zip(items, runners):
        assert rname == name and rx is x
        with torch.no_grad():
            (out,) = runner(x)
            assert torch.allclose(torch.from_numpy(out), module(x), atol=1e-5)
    timed = measure.time_rounds(runners, num_threads=1, rounds=2, calls=3)
    assert all(t.ms > 0 and t.rounds == 2 for t in (*timed.cold.values(), *timed.hot.values()))


def test_a_table_measures_with_its_own_backend(tmp_path, tiny_space):
    ops = dict(list(build.space_ops(tiny_space, 10).items())[:2])
    table = build.new_table("onnxruntime", 64, 1, "onnxruntime")
    assert table.environment["backend"] == "onnxruntime" and table.environment["onnxruntime"]
    table.path = tmp_path / "onnxruntime@64.yaml"
    build.fill(table, ops, rounds=2, progress=False)
    saved = LatencyTable.load(table.path)
    assert set(saved.entries) == set(ops) and all(e["hot_ms"] > 0 for e in saved.entries.values())
    assert build.table_backend(saved) == "onnxruntime"


def test_a_backend_that_cannot_run_here_says_why():
    with pytest.raises(backends.BackendError, match="Apple hardware"):
        backends.runners(_items(), "coreml", threads=1)
    with pytest.raises(backends.BackendError, match="unknown backend 'tpu'"):
        backends.get_backend("tpu")
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in backends.get_backend("torch-cuda").available()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runner_times_with_events():
    (name, runner, x), = backends.runners(_items()[:1], "torch-cuda", threads=1)
    for _ in range(3):   # lazy initialisation and kernel selection happen on the first calls
        runner(x)
    queued, alone = runner.time_calls(x, 20), runner.time_alone(x, 20)
    assert x.is_cuda and len(queued) == len(alone) == 20 and all(t > 0 for t in queued + alone)
    runner.evict_cache()
    # queued calls hide each other's launch latency: never slower per call than calls timed alone
    assert queued[0] <= 1.1 * sorted(alone)[10]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_table_fits_its_kind_factors(tiny_space):
    table = build.new_table("cuda", 64, 1, "torch-cuda")
    cal = build.calibrate(table, [tiny_space], 10, samples=8, rounds=2, progress=False)[tiny_space.family]
    configs = build.calibration_configs([tiny_space.replace(resolution=64)], 10, 8, 0)
    kinds = {graph.key_kind(k) for c in configs.values() for k in graph.keys(c)}
    assert set(table.kind_factors(tiny_space.family)) == kinds
    assert table.calibration(tiny_space.family)["kind_ridge"] in build.KIND_RIDGES
    assert all(table.predict(c) == pytest.approx(cal.predicted_ms[n], rel=1e-3) for n, c in configs.items())
    assert max(abs(e) for e in cal.errors_pct) < 50
