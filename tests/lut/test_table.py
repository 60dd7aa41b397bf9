import math
import re

import pytest

from lut import graph
from lut.table import SCHEMA, CacheModel, LatencyTable, MissingKeysError, TableError
from supernets.config import Choice


def _cfg(space, widths=None):
    widths = widths or tuple(s.max_width for s in space.stages)
    return Choice(widths, (("mb4d", "mb4d"), ("mb4d",), ("mb4d", "mb3d"), ("mb3d", "identity"))).to_config(space)


def test_op_graph_is_a_chain_with_keys(tiny_space):
    g = graph.op_graph(_cfg(tiny_space))
    keys = graph.keys(_cfg(tiny_space))
    assert g.number_of_nodes() == len(keys) and g.number_of_edges() == len(keys) - 1
    assert keys[0] == "stem:3>32:64x64" and keys[-1].startswith("head:c64:2x2:tokens")
    assert "embed:32>48:8x8" in keys and "mb3d:c48:4x4" in keys and "reshape:map:c48:4x4" in keys


def test_predict_sums_entries_and_missing_lists_keys(tiny_space, tmp_path):
    cfg = _cfg(tiny_space)
    table = LatencyTable("cpu", 64)
    keys = graph.keys(cfg)
    for i, k in enumerate(dict.fromkeys(keys)):
        table.add(k, 0.1 * (i + 1))
    assert table.predict(cfg) == pytest.approx(sum(table.ms(k) for k in keys))
    table.save(tmp_path / "cpu@64.yaml")
    loaded = LatencyTable.load(tmp_path / "cpu@64.yaml", device="cpu", resolution=64)
    assert loaded.predict(cfg) == pytest.approx(table.predict(cfg))
    narrower = _cfg(tiny_space, (16, 16, 16, 32))
    missing = loaded.missing(narrower)
    assert missing and all(k not in loaded for k in missing)
    with pytest.raises(MissingKeysError, match="nas lut build --device cpu --family efficientformer"):
        loaded.predict(narrower)


def test_a_table_read_again_is_parsed_once_and_never_stale(tmp_path, monkeypatch):
    """A settled table file is parsed once per process (the shipped ones take most of a second);
    each load owns its entries; a file replaced, or edited in place, is read anew."""
    import os

    from lut import table as table_mod
    from nas.core import io

    path = tmp_path / "cpu@64.yaml"
    LatencyTable("cpu", 64, entries={"a": {"ms": 1.0}}).save(path)
    os.utime(path, (1e9, 1e9))                           # settled long ago
    parses = []
    monkeypatch.setattr(io, "read_yaml", lambda p: parses.append(p) or yaml_load(p))
    first = LatencyTable.load(path)
    first.entries["a"]["ms"] = 5.0
    first.entries["b"] = {"ms": 2.0}
    assert LatencyTable.load(path).entries == {"a": {"ms": 1.0}} and len(parses) == 1
    path.write_text(path.read_text().replace("ms: 1.0", "ms: 3.0"))    # edited in place: same size, new time
    assert LatencyTable.load(path).entries == {"a": {"ms": 3.0}} and len(parses) == 2
    LatencyTable("cpu", 64, entries={"a": {"ms": 4.0}}).save(tmp_path / "other.yaml")
    os.replace(tmp_path / "other.yaml", path)            # replaced (a new file, just written): read anew
    assert LatencyTable.load(path).entries == {"a": {"ms": 4.0}} and len(parses) == 3
    assert LatencyTable.load(path).entries == {"a": {"ms": 4.0}} and len(parses) == 4   # too fresh to keep
    assert len(table_mod._PARSED) <= table_mod._PARSED_KEPT


def yaml_load(path):
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def test_table_for_another_resolution_or_schema_is_an_error(tiny_space, tmp_path):
    table = LatencyTable("cpu", 64)
    path = table.save(tmp_path / "cpu@64.yaml")
    with pytest.raises(TableError, match="resolution 64"):
        LatencyTable.load(path, resolution=224)
    path.write_text(path.read_text().replace(f"schema: {SCHEMA}", f"schema: {SCHEMA - 1}"))
    with pytest.raises(TableError, match="schema"):
        LatencyTable.load(path)


def test_cache_model_prices_measured_entries_by_network_weight_and_survives_a_round_trip(tmp_path):
    table = LatencyTable("cpu", 64)
    table.add("a", cold_ms=2.0, hot_ms=1.0, params=2**18)       # 1 MiB of float32 weights
    table.add("b", 0.5, source="estimated")
    table.set_calibration("efficientformer", {"cache_model": CacheModel(0.5, 0.1, (0.0, 2.0)).to_dict()})
    assert table.ms("b", blend=0.9) == 0.5                        # a direct entry ignores the blend
    assert table.ms("a", blend=0.25) == pytest.approx(1.25)
    model = table.cache_model("efficientformer")
    assert model.blend(2**20) == pytest.approx(0.5)
    assert model.blend(2**20 * math.e) == pytest.approx(0.6)
    assert model.blend(2**30) == pytest.approx(0.7)               # ln W clamped to the fitted range
    assert CacheModel(base=0.9, slope=1.0).blend(2**30) == 1.0    # the blend to [0, 1]
    table.save(tmp_path / "cpu@64.yaml")
    loaded = LatencyTable.load(tmp_path / "cpu@64.yaml")
    assert loaded.cache_model("efficientformer") == model and loaded.ms("a", 0.25) == pytest.approx(1.25)
    assert loaded.cache_model("fmvit") == CacheModel()            # a family never calibrated here
    with pytest.raises(ValueError, match="either ms"):
        table.add("c", 1.0, cold_ms=2.0, hot_ms=1.0)
    with pytest.raises(ValueError, match="either ms"):
        table.add("c", cold_ms=2.0)


@pytest.mark.parametrize("entry, complaint", [
    ("{ms: -50}", "ms -50 is not a finite"), ("{ms: .nan}", "ms nan is not a finite"), ("{ms: abc}", "ms 'abc'"),
    ("3.5", "is not a mapping with ms"), ("{cold_ms: 1.0, hot_ms: .inf}", "hot_ms inf")])
def test_a_hand_edited_entry_is_refused_with_its_key(tmp_path, entry, complaint):
    path = tmp_path / "cpu@64.yaml"
    path.write_text(f"schema: {SCHEMA}\ndevice: cpu\nresolution: 64\nentries:\n  'stem:3>16:64x64': {entry}\n")
    with pytest.raises(TableError, match=re.escape(complaint)) as e:
        LatencyTable.load(path)
    assert "stem:3>16:64x64" in str(e.value)


@pytest.mark.parametrize("body, complaint", [
    ("device: cpu\nentries: {}\n", "resolution None"), ("device: cpu\nresolution: 64\nentries: [1, 2]\n", "entries"),
    ("device: cpu\nresolution: 64\nenvironment: [1]\nentries: {}\n", "environment"),
    ("device: iphone13\nresolution: 64\nentries: {}\n", "named for cpu@64 but holds iphone13@64")])
def test_a_malformed_table_file_is_one_clear_error(tmp_path, body, complaint):
    path = tmp_path / "cpu@64.yaml"
    path.write_text(f"schema: {SCHEMA}\n{body}")
    with pytest.raises(TableError, match=re.escape(complaint)):
        LatencyTable.load(path)


def _add_and_save(path, key, barrier):
    table = LatencyTable.load(path, device="cpu", resolution=64)   # every writer reads the same start
    barrier.wait()
    table.add(key, 0.5)
    table.save()


def test_concurrent_writers_keep_each_others_entries(tmp_path):
    """Two `nas lut build` (or a slim measuring a missing op) writing one table at once: each
    read the file before the other wrote, and the last writer must not drop the first's entries."""
    import multiprocessing

    path = tmp_path / "cpu@64.yaml"
    start = LatencyTable("cpu", 64)
    start.add("conv:a", 1.0)
    start.save(path)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    workers = [ctx.Process(target=_add_and_save, args=(path, f"conv:w{i}", barrier)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 4
    assert set(LatencyTable.load(path, device="cpu", resolution=64).entries) == {"conv:a"} | {f"conv:w{i}" for i in range(4)}
    # this table's own entry wins over the file's for a key both hold
    mine = LatencyTable.load(path, device="cpu", resolution=64)
    mine.entries["conv:a"] = {"ms": 2.0, "source": "measured"}
    mine.save()
    assert LatencyTable.load(path, device="cpu", resolution=64).ms("conv:a") == 2.0


def _two_block_config(tiny_space):
    from supernets.config import Choice

    return Choice(tuple(st.max_width for st in tiny_space.stages),
                  (("mb4d", "mb4d"), ("mb4d",), ("mb4d", "mb3d"), ("mb3d", "identity"))).to_config(tiny_space)


def test_each_family_is_priced_by_the_cache_model_fitted_on_its_own_networks(tiny_space):
    """A table is shared by the families deploying at its resolution; a blend fitted on one
    family's networks must not price another's (it priced FMViT 10-15 % high on XNNPACK)."""
    from lut import graph

    cfg = _two_block_config(tiny_space)
    table = LatencyTable("cpu", tiny_space.resolution)
    for key in graph.keys(cfg):
        table.add(key, cold_ms=2.0, hot_ms=1.0, params=10)
    n = len(graph.keys(cfg))
    table.set_calibration(cfg.family, {"cache_model": CacheModel(base=1.0).to_dict()})
    table.set_calibration("another", {"cache_model": CacheModel(base=0.0).to_dict()})
    assert table.predict(cfg) == pytest.approx(2.0 * n)           # its own family's blend, not the other's
    table.environment["calibrations"].pop(cfg.family)
    assert table.predict(cfg) == pytest.approx((1.0 + CacheModel().base) * n)   # uncalibrated: the default


def test_a_table_calibrated_before_calibrations_were_per_family_prices_as_it_did(tiny_space, tmp_path):
    import yaml
    from lut import graph

    cfg = _two_block_config(tiny_space)
    table = LatencyTable("cpu", tiny_space.resolution)
    for key in graph.keys(cfg):
        table.add(key, cold_ms=2.0, hot_ms=1.0, params=10)
    path = table.save(tmp_path / f"cpu@{tiny_space.resolution}.yaml")
    raw = yaml.safe_load(path.read_text())
    raw["environment"].update(cache_model=CacheModel(base=0.25).to_dict(),
                              calibration={"median_abs_error_pct": 1.5, "measured_ms": {"cal00": 3.0}})
    path.write_text(yaml.safe_dump(raw))
    old = LatencyTable.load(path)
    assert old.predict(cfg) == pytest.approx(1.25 * len(graph.keys(cfg)))
    assert old.calibration("any family")["median_abs_error_pct"] == 1.5
    assert "cache_model" not in old.environment and "calibration" not in old.environment


def test_a_boundary_cost_comes_off_each_op_by_the_mb_it_converts_alone(tiny_space):
    from lut import graph
    from lut.table import boundary_mb

    cfg = _two_block_config(tiny_space)
    ops = graph.ops(cfg)
    table = LatencyTable("xnnpack", tiny_space.resolution, {"backend": "executorch"})
    for key in graph.keys(cfg):
        table.add(key, cold_ms=2.0, hot_ms=2.0, params=10)
    plain = table.predict(cfg)
    mb = boundary_mb(ops)
    assert len(mb) == len(ops) and mb[-1] == 0.0 and mb[0] == pytest.approx(4 * 3 * tiny_space.resolution ** 2 / 1e6
                                                                             + 4 * math.prod(ops[1].in_shape) / 1e6)
    table.set_calibration(cfg.family, {"cache_model": CacheModel(base=0.5, boundary_ms_per_mb=0.01).to_dict()})
    assert table.predict(cfg) == pytest.approx(plain - 0.01 * sum(mb))
