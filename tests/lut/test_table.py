import pytest

from lut import build, graph
from lut.table import LatencyTable, MissingKeysError, TableError
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
    path.write_text(path.read_text().replace("schema: 1", "schema: 0"))
    with pytest.raises(TableError, match="schema"):
        LatencyTable.load(path)


def test_covering_configs_cover_every_reachable_key(tiny_space):
    ops = build.space_ops(tiny_space, 10)
    import itertools
    import random

    rng = random.Random(0)
    for _ in range(30):
        widths = tuple(rng.choice(tiny_space.widths(j)) for j in range(4))
        kinds = []
        for s in tiny_space.stages:
            n = rng.randint(s.min_blocks, s.slots)
            tok = rng.randint(0, n) if "mb3d" in s.choices else 0
            kinds.append(("mb4d",) * (n - tok) + ("mb3d",) * tok + ("identity",) * (s.slots - n))
        cfg = Choice(widths, tuple(kinds)).to_config(tiny_space, 10)
        assert set(graph.keys(cfg)) <= set(ops)
    assert list(itertools.islice(ops, 1))


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
