import math
import random

import numpy as np
import pytest
import torch

from lut import build, graph
from lut.table import CacheModel, LatencyTable, MissingKeysError
from supernets.config import Choice
from supernets.registry import random_choice


def _cfg(space, widths=None):
    widths = widths or tuple(s.max_width for s in space.stages)
    return Choice(widths, (("mb4d", "mb4d"), ("mb4d",), ("mb4d", "mb3d"), ("mb3d", "identity"))).to_config(space)


def test_covering_configs_cover_every_reachable_key(tiny_space):
    ops = build.space_ops(tiny_space, 10)
    rng = random.Random(0)
    for _ in range(50):
        cfg = random_choice(tiny_space, rng).to_config(tiny_space, 10)
        assert set(graph.keys(cfg)) <= set(ops)


def test_fill_measures_and_predictor_caches(tiny_space, tmp_path):
    cfg = _cfg(tiny_space)
    table = build.new_table("cpu", 64, 1)
    table.path = tmp_path / "cpu@64.yaml"
    predictor = build.Predictor(table, measurable=True, rounds=2, progress=False)
    ms = predictor(cfg)
    assert ms > 0 and not table.missing(cfg)
    on_disk = LatencyTable.load(table.path)
    assert on_disk.entries.keys() == table.entries.keys()
    assert all(e["source"] == "measured" and e["count"] > 0 for e in on_disk.entries.values())
    assert on_disk.environment["threads"] == 1 and on_disk.environment["torch"]
    not_measurable = build.Predictor(LatencyTable("iphone12", 64), measurable=False)
    with pytest.raises(MissingKeysError):
        not_measurable(cfg)


def test_fit_cache_model_recovers_the_blend_of_synthetic_networks():
    rng = random.Random(0)
    weights = [2**20 * rng.uniform(2, 40) for _ in range(8)]
    hot = [rng.uniform(5, 50) for _ in range(8)]
    gap = [h * rng.uniform(0.1, 0.4) for h in hot]
    truth = CacheModel(base=0.3, slope=0.12)
    measured = [h + truth.blend(w) * g for h, g, w in zip(hot, gap, weights)]
    fitted = build.fit_cache_model(hot, gap, measured, weights)
    assert fitted.base == pytest.approx(0.3) and fitted.slope == pytest.approx(0.12)
    assert fitted.log_mib_range == pytest.approx((min(math.log(w / 2**20) for w in weights),
                                                 max(math.log(w / 2**20) for w in weights)))
    # three networks cannot identify a slope: a constant blend is fitted
    const = build.fit_cache_model(hot[:3], gap[:3], [h + 0.4 * g for h, g in zip(hot, gap)][:3], weights[:3])
    assert const.slope == 0.0 and const.base == pytest.approx(0.4)


def test_fit_cache_model_recovers_the_cost_ops_pay_alone_at_their_layout_boundaries():
    """XNNPACK: an op run alone converts its 4D input and output between NCHW and NHWC, a network
    once; with each network's boundary MB the fit recovers that cost per MB with the blend, and
    a boundary that explains nothing (k <= 0) is dropped."""
    rng = random.Random(1)
    weights = [2**20 * rng.uniform(2, 40) for _ in range(10)]
    hot = [rng.uniform(5, 50) for _ in range(10)]
    gap = [h * rng.uniform(0.1, 0.4) for h in hot]
    boundary = [rng.uniform(2, 20) for _ in range(10)]
    truth = CacheModel(base=0.3, slope=0.12, boundary_ms_per_mb=0.08)
    measured = [h + truth.blend(w) * g - 0.08 * b for h, g, w, b in zip(hot, gap, weights, boundary)]
    fitted = build.fit_cache_model(hot, gap, measured, weights, boundary)
    assert (fitted.base, fitted.slope, fitted.boundary_ms_per_mb) == pytest.approx((0.3, 0.12, 0.08))
    assert CacheModel.from_dict(fitted.to_dict()).boundary_ms_per_mb == pytest.approx(0.08)   # stored
    no_copies = [h + truth.blend(w) * g + 0.05 * b for h, g, w, b in zip(hot, gap, weights, boundary)]
    assert build.fit_cache_model(hot, gap, no_copies, weights, boundary).boundary_ms_per_mb == 0.0


def test_kind_factors_recover_how_a_network_runs_each_kind_of_op():
    """A GPU at batch 1: networks run some kinds of op slower than alone (factor > 1), others at
    their standalone speed. With enough networks the fit recovers the factors; a kind no network
    has stays at 1 (the ridge's pull)."""
    rng = random.Random(1)
    truth = {"mb4d": 1.15, "mb3d": 1.3, "embed": 1.0, "head": 0.9}
    rows = [{k: rng.uniform(0.1, 3.0) for k in truth} for _ in range(24)]
    measured = [sum(truth[k] * v for k, v in row.items()) for row in rows]
    factors, ridge = build.fit_kind_factors(rows, measured)
    assert ridge == min(build.KIND_RIDGES)   # exact data: the weakest pull predicts best
    assert factors == pytest.approx(truth, abs=0.02)
    unseen = build.fit_kind_factors([{**row, "stem": 0.0} for row in rows], measured)[0]
    assert unseen["stem"] == pytest.approx(1.0)


def test_a_tables_kind_factors_price_every_network_and_show_in_its_breakdown(tiny_space):
    table = LatencyTable("cuda", 64, {"backend": "torch-cuda"})   # as built on a GPU
    cfg = _cfg(tiny_space)
    for op in graph.ops(cfg):
        table.add(op.key, cold_ms=0.02, hot_ms=0.01, params=100)
    table.set_calibration(cfg.family, {"cache_model": CacheModel(base=0.0).to_dict()})
    plain = table.predict(cfg)
    assert plain == pytest.approx(0.01 * len(graph.ops(cfg)))
    kinds = {graph.key_kind(k) for k in graph.keys(cfg)}
    slow = sorted(kinds)[0]
    table.calibration(cfg.family)["kind_factors"] = {slow: 1.5}
    n_slow = sum(graph.key_kind(k) == slow for k in graph.keys(cfg))
    assert table.predict(cfg) == pytest.approx(plain + 0.005 * n_slow)
    assert all(ms == pytest.approx(0.015 if graph.key_kind(key) == slow else 0.01)
               for _, key, ms in table.breakdown(cfg))


def test_calibrate_fits_the_cache_model_on_real_networks_and_stores_its_configs(tiny_space):
    table = build.new_table("cpu", 64, 1)
    table.set_calibration("fmvit", {"cache_model": CacheModel(base=0.9).to_dict()})   # another family's
    # an earlier build's entries of some of the networks' ops, timed at another machine speed
    stale = list(build.ops_for(build.calibration_configs([tiny_space], 10, 4, 0).values()))[:3]
    for key in stale:
        table.add(key, cold_ms=50.0, hot_ms=40.0, params=0)
    (family, cal), = build.calibrate(table, [tiny_space], 10, samples=4, rounds=2, progress=False).items()
    assert all(table.entries[k]["hot_ms"] < 40.0 for k in stale), "the re-timed ops kept their stale entries"
    assert family == tiny_space.family and table.cache_model(family) == cal.cache_model
    stored = table.calibration(family)
    assert set(stored["measured_ms"]) == set(cal.measured_ms) == {"cal00", "cal01", "cal02", "cal03"}
    # the calibration measured the ops it needed (with their weights): those networks are priced
    again = build.calibration_configs([type(tiny_space).from_dict(s) for s in stored["spaces"]], 10, 4, 0)
    for c in again.values():
        assert not table.missing(c) and table.weight_bytes(c) > 0
        assert table.predict(c) == pytest.approx(cal.predicted_ms[next(n for n, x in again.items() if x == c)])
    # a loose bound (2 rounds of tiny networks on a shared machine): catches a lost or doubled op
    assert max(abs(e) for e in cal.errors_pct) < 35
    assert table.cache_model("fmvit") == CacheModel(base=0.9)     # untouched by this family's calibration


def test_an_interrupted_build_resumes_from_its_last_round(tiny_space, tmp_path, monkeypatch):
    ops = build.space_ops(tiny_space, 10)
    table = build.new_table("cpu", 64, 1)
    table.path = tmp_path / "cpu@64.yaml"
    sidecar = tmp_path / "cpu@64.yaml.partial"
    real_time_rounds = build.measure.time_rounds
    rounds_run = []

    def counting(*args, stop_at=None, **kwargs):
        persist = kwargs["on_round"]

        def on_round(record):
            persist(record)
            rounds_run.append(1)
            if len(rounds_run) == stop_at:
                raise KeyboardInterrupt   # as if killed right after round `stop_at` was saved
        return real_time_rounds(*args, **{**kwargs, "on_round": on_round})

    monkeypatch.setattr(build.measure, "time_rounds", lambda *a, **k: counting(*a, stop_at=2, **k))
    with pytest.raises(KeyboardInterrupt):
        build.fill(table, ops, rounds=3, progress=False)
    assert sidecar.is_file() and not table.path.exists()
    rounds_run.clear()
    monkeypatch.setattr(build.measure, "time_rounds", counting)
    build.fill(table, ops, rounds=3, progress=False)
    assert len(rounds_run) == 1, "the resumed build re-ran rounds it had saved"
    assert not sidecar.exists() and set(table.entries) == set(ops)
    assert all(e["rounds"] == 3 for e in table.entries.values())


def test_random_choice_respects_the_space(tiny_space):
    rng = random.Random(0)
    for _ in range(50):
        choice = random_choice(tiny_space, rng)
        cfg = choice.to_config(tiny_space, 10)   # validates: widths on the grid, 3D after 4D
        for j, stage in enumerate(tiny_space.stages):
            assert stage.min_width <= cfg.widths[j] <= stage.max_width
            assert len(cfg.stages[j].blocks) >= stage.min_blocks


def test_a_table_calibrated_on_a_busy_machine_is_flagged(tmp_path):
    table = build.new_table("cpu", 64, 1)
    table.path = tmp_path / "cpu@64.yaml"
    assert build.noisy_calibration_warning(table) is None            # not calibrated yet: nothing to say
    table.set_calibration("fastvit", {"median_abs_error_pct": 2.4})
    assert build.noisy_calibration_warning(table) is None
    table.set_calibration("mobilevitv3", {"median_abs_error_pct": 30.2})
    warning = build.noisy_calibration_warning(table)
    assert "30.2%" in warning and "mobilevitv3's" in warning and "quiet machine" in warning
    assert len(warning.splitlines()) == 1


def test_a_second_build_on_the_machine_is_refused_while_one_measures(tmp_path, capsys):
    import os
    import tempfile

    from filelock import FileLock

    from nas.cli import main

    held = FileLock(os.path.join(tempfile.gettempdir(), "nas-lut-build.lock"))
    with held.acquire(timeout=5):
        assert main(["lut", "build", "--device", "cpu", "--family", "efficientformer", "--space", "small",
                     "--tables", str(tmp_path / "tables"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another `nas lut build` is measuring on this machine" in err, err
    assert not (tmp_path / "tables").exists()


@pytest.mark.parametrize("family", ["efficientformer", "fastvit", "mobilevitv3", "iformer", "fmvit"])
def test_the_calibration_networks_span_the_sizes_validation_draws(family):
    """A cache blend is fitted over ln(weight bytes) and clamped outside the range of its calibration
    networks (#32: FastViT's table was mispriced where it extrapolated). The networks `nas lut
    build` calibrates a family on (12, seed 0, from every shipped space) must span the weights of the
    configs `nas lut validate` draws (its small space, seed 1): the whole middle 90 % of them."""
    from lut import store
    from supernets.registry import get_family

    def weights(configs) -> np.ndarray:   # parameter counts, built on the meta device (shapes only)
        with torch.device("meta"):
            return np.array([sum(p.numel() for p in get_family(c.family).build(c).parameters()) for c in configs])

    (res, spaces), = store.spaces_at([family], None, None, "all").items()
    calibration = weights(build.calibration_configs(spaces, 10, 12, 0).values())
    small = next(s for s in spaces if s.to_dict() == store.spaces_at([family], res, None, "small")[res][0].to_dict())
    rng = random.Random(1)
    drawn = weights([random_choice(small, rng).to_config(small, 10) for _ in range(40)])
    lo, hi = np.quantile(drawn, [0.05, 0.95])
    assert calibration.min() <= lo and calibration.max() >= hi, (calibration.min(), calibration.max(), lo, hi)
