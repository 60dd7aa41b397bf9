"""The table store: which table a device gets, where additions go, and how a device's missing ops
are filled, as its backend and device declare."""
import pytest

from lut import build, estimate, store
from lut.devices import SHIPPED_TABLES, get_device
from lut.table import TableError


def _user_device(tmp_path, line: str):
    (tmp_path / "devices.yaml").write_text(f"devices:\n  - {line}\n")


def test_devices_declare_how_their_tables_are_filled(tmp_path):
    _user_device(tmp_path, "{name: iphone15, backend: coreml}")
    cpu, iphone12, iphone15 = (get_device(n, tmp_path) for n in ("cpu", "iphone12", "iphone15"))
    assert (cpu.fills_here, cpu.exporter, cpu.estimated_as) == (True, None, None)          # timed here
    assert (iphone12.fills_here, iphone12.exporter) == (True, "lut.apple")                 # estimated, or imported
    assert iphone12.estimated_as == "A14 iOS16 ModelBench"
    assert (iphone15.fills_here, iphone15.exporter, iphone15.estimated_as) == (False, "lut.apple", None)  # imported only
    assert estimate.DEVICE_SOURCE == {"iphone12": "A14 iOS16 ModelBench", "iphone13": "A15 iFormer"}


def test_a_shipped_table_is_read_in_place_and_written_to_the_users_directory(tmp_path):
    device, table = store.open_table("iphone12", 224, tmp_path, create=True)
    assert table.loaded_from == SHIPPED_TABLES / "iphone12@224.yaml"
    assert table.path == tmp_path / "iphone12@224.yaml"      # additions never go into the package
    assert store.provenance(table)["table"] == str(SHIPPED_TABLES / "iphone12@224.yaml")
    assert store.user_copy(device, 224, tmp_path).path == tmp_path / "iphone12@224.yaml"


def test_a_device_that_cannot_fill_a_table_gets_none(tmp_path):
    _user_device(tmp_path, "{name: iphone15, backend: coreml}")
    with pytest.raises(TableError, match="no latency table for iphone15@224.*nas lut export"):
        store.open_table("iphone15", 224, tmp_path, create=True)
    with pytest.raises(TableError, match="no published protocol to estimate iphone15"):
        store.estimate_protocol(get_device("iphone15", tmp_path))
    with pytest.raises(TableError, match="cpu is measured, not estimated"):
        store.estimate_protocol(get_device("cpu"))
    device, table = store.open_table("cpu", 224, tmp_path, create=True)   # measurable: a new, empty table
    assert not table.entries and table.path == tmp_path / "cpu@224.yaml" and not table.path.exists()


def test_a_table_of_another_backend_is_refused(tmp_path):
    table = build.new_table("iphone12", 64, 1, "torch-eager")
    table.path = tmp_path / "iphone12@64.yaml"
    table.save()
    with pytest.raises(TableError, match="backend torch-eager, but device iphone12 uses coreml"):
        store.open_table("iphone12", 64, tmp_path, create=True)
    with pytest.raises(TableError, match="holds torch-eager timings, but device iphone12 uses coreml"):
        store.user_copy(get_device("iphone12"), 64, tmp_path)


def test_provenance_names_and_fingerprints_the_file_it_was_priced_with(tmp_path):
    table = build.new_table("cpu", 64, 1, "torch-eager")
    assert store.provenance(table) == {"table": "(in memory, not saved)"}
    table.path = tmp_path / "cpu@64.yaml"
    table.save()
    first = store.provenance(table)
    assert first["table"] == str(table.path) and len(first["table_sha256"]) == 16
    table.path.write_text(table.path.read_text() + "# edited\n")
    assert store.provenance(table)["table_sha256"] != first["table_sha256"]   # another file, another fingerprint


def test_coverage_lists_a_familys_ops_once_per_resolution(monkeypatch):
    """`nas lut devices` prices every table's coverage: tables of one resolution share the listing
    of each family's ops (the slow part), and a table at another resolution gets its own."""
    listings = []
    listed = store.ops_of
    monkeypatch.setattr(store, "ops_of", lambda spaces, n: listings.append(n) or listed(spaces, n))
    needed_ops: dict = {}
    first, second, other = build.new_table("cpu", 64, 1), build.new_table("ort", 64, 1), build.new_table("cpu", 96, 1)
    key = next(iter(store.ops_of(store.spaces_at(["efficientformer"], 64, None, "small")[64], 10)))
    first.add(key, 1.0, source="estimated")
    listings.clear()
    cover = store.coverage(first, ["efficientformer"], "small", 10, needed_ops)
    assert cover["efficientformer"][0] == 1 and cover["efficientformer"][1] > 1
    assert store.coverage(second, ["efficientformer"], "small", 10, needed_ops)["efficientformer"] == \
        (0, cover["efficientformer"][1])
    assert len(listings) == 1
    store.coverage(other, ["efficientformer"], "small", 10, needed_ops)
    assert len(listings) == 2
    assert store.coverage(first, ["efficientformer"], "small", 10) == cover     # no dict: listed afresh
    assert len(listings) == 3


@pytest.mark.parametrize("argv, blamed", [
    (["lut", "build", "--rounds", "0"], "--rounds 0: need at least 1 timing round"),
    (["lut", "build", "--calibration-samples", "1"], "--calibration-samples 1: need at least 2 networks"),
    (["lut", "validate", "--rounds", "0"], "--rounds 0: need at least 1 timing round"),
    (["quickstart", "--rounds", "0"], "--rounds 0: need at least 1 timing round"),
])
def test_timing_rounds_and_calibration_networks_are_checked_before_anything_is_written(argv, blamed, tmp_path,
                                                                                      capsys):
    from nas.cli import main

    # quickstart checks them before it trains anything (a minute wasted, then a traceback, before)
    assert main([*argv, "--runs", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and blamed in err
    assert not (tmp_path / "runs").exists()


def test_a_build_calibrates_each_family_it_has_no_calibration_of_and_leaves_the_others(tmp_path, monkeypatch):
    """The FastViT case of #32: its ops were all in the 256 px table already (built with
    MobileViTv3), so a build for it measured nothing and refitted nothing; its networks were
    priced by a blend fitted on other networks. Now a family without a calibration of its own
    gets one, and a family that has one keeps it."""
    from lut.table import CacheModel

    device, table = store.open_table("cpu", 256, tmp_path, create=True)
    (res, spaces), = store.spaces_at(["fastvit", "mobilevitv3"], None, device, "small").items()
    for key in store.ops_of(spaces, 10):
        table.add(key, cold_ms=2.0, hot_ms=1.0, params=10)
    table.set_calibration("mobilevitv3", {"cache_model": CacheModel(base=0.3).to_dict()})
    table.save()
    fitted = []
    monkeypatch.setattr(build, "calibrate", lambda table, spaces, *a, **k: fitted.append(
        sorted(s.family for s in spaces)) or {})
    store.build_tables("cpu", ["fastvit", "mobilevitv3"], space="small", tables_dir=tmp_path, log=lambda *a: None)
    assert fitted == [["fastvit"]]                         # nothing to measure; fastvit had no calibration
    store.build_tables("cpu", ["fastvit"], space="small", tables_dir=tmp_path, recalibrate=True, log=lambda *a: None)
    assert fitted[-1] == ["fastvit"]
