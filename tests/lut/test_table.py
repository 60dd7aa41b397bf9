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
    table.set_cache_model(CacheModel(base=0.5, slope=0.1, log_mib_range=(0.0, 2.0)))
    assert table.ms("b", blend=0.9) == 0.5                        # a direct entry ignores the blend
    assert table.ms("a", blend=0.25) == pytest.approx(1.25)
    model = table.cache_model
    assert model.blend(2**20) == pytest.approx(0.5)
    assert model.blend(2**20 * math.e) == pytest.approx(0.6)
    assert model.blend(2**30) == pytest.approx(0.7)               # ln W clamped to the fitted range
    assert CacheModel(base=0.9, slope=1.0).blend(2**30) == 1.0    # the blend to [0, 1]
    table.save(tmp_path / "cpu@64.yaml")
    loaded = LatencyTable.load(tmp_path / "cpu@64.yaml")
    assert loaded.cache_model == model and loaded.ms("a", 0.25) == pytest.approx(1.25)
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
