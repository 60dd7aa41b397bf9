import csv

import pytest

import search_spaces
from lut import apple, build, ondevice, store
from lut.devices import get_device
from lut.table import LatencyTable
from nas.cli import main
from supernets.config import SearchSpace


@pytest.fixture(scope="module")
def two_ops():
    """Two small ops of the shipped EfficientFormer space at 64 px (keys `nas lut import` knows)."""
    space = SearchSpace.load(search_spaces.space_path("efficientformer", "small")).replace(resolution=64)
    ops = build.space_ops(space, 10)
    keys = sorted(ops, key=lambda k: ops[k].in_shape[1])[:2]
    return {k: ops[k] for k in keys}


@pytest.fixture(scope="module")
def exported(two_ops, tmp_path_factory):
    out = tmp_path_factory.mktemp("apple")
    return apple.export_ops(two_ops, out, get_device("iphone12"), 64), out


def test_export_writes_a_package_per_op_a_manifest_and_resumes(exported, two_ops):
    result, out = exported
    assert result.written == 2 and result.skipped == 0
    rows = list(csv.DictReader(open(result.manifest)))
    assert [r["key"] for r in rows] == list(two_ops)
    assert all((out / r["file"] / "Manifest.json").is_file() for r in rows)       # an .mlpackage directory
    assert rows[0]["input_shape"] == "x".join(map(str, two_ops[rows[0]["key"]].in_shape))
    assert "nas lut import timings.csv --device iphone12" in (out / apple.MAC_SCRIPT).read_text()
    again = apple.export_ops(two_ops, out, get_device("iphone12"), 64)
    assert again.written == 0 and again.skipped == 2


def test_timings_round_trip_into_the_user_table(exported, two_ops, tmp_path):
    result, out = exported
    rows = list(csv.DictReader(open(result.manifest)))
    timings = out / "timings.csv"
    timings.write_text("file,ms\n" + "".join(f"{r['file']},{0.25 * (i + 1)}\n" for i, r in enumerate(rows)))
    tables = tmp_path / "tables"
    assert store.import_timings(timings, "iphone12", resolution=64, tables_dir=tables)[1] == 2
    table = LatencyTable.load(tables / "iphone12@64.yaml", device="iphone12", resolution=64)
    assert {k: e["ms"] for k, e in table.entries.items()} == {rows[0]["key"]: 0.25, rows[1]["key"]: 0.5}
    assert all(e["source"] == "measured" and e["imported_from"] == "timings.csv" for e in table.entries.values())
    assert table.environment["backend"] == "coreml"
    # a second import by key updates the entry in place
    (tmp_path / "more.csv").write_text(f"key,ms\n{rows[0]['key']},0.3\n")
    store.import_timings(tmp_path / "more.csv", "iphone12", resolution=64, tables_dir=tables)
    assert LatencyTable.load(tables / "iphone12@64.yaml").entries[rows[0]["key"]]["ms"] == 0.3


def test_export_converts_only_what_the_device_has_not_measured(two_ops, tmp_path, capsys):
    """Estimated entries are what timings replace: they are exported like missing ones."""
    space = SearchSpace.load(search_spaces.space_path("efficientformer", "small")).replace(resolution=64)
    table = build.new_table("iphone12", 64, 1, "coreml")
    lacking = next(iter(two_ops))
    for key in build.space_ops(space, 10):
        table.add(key, 1.0, source="estimated" if key == lacking else "measured")
    table.save(tmp_path / "tables" / "iphone12@64.yaml")
    out = tmp_path / "export"
    assert main(["lut", "export", "--device", "iphone12", "--family", "efficientformer", "--space", "small",
                 "--resolution", "64", "--tables", str(tmp_path / "tables"), "--out", str(out), "--no-progress"]) == 0
    assert "exporting 1 Core ML packages" in capsys.readouterr().out
    assert [r["key"] for r in csv.DictReader(open(out / ondevice.MANIFEST))] == [lacking]


@pytest.mark.parametrize("text, message", [
    ("key,ms\nconv:nope,1.0\n", "timings.csv:2: unknown op key 'conv:nope'"),
    ("key,ms\n{key},0\n", "timings.csv:2: ms 0 must be a positive time"),
    ("key,ms\n{key},-1\n", "ms -1 must be a positive time"),
    ("key,ms\n{key},fast\n", "ms 'fast' is not a number"),
    ("op,latency\n{key},1\n", "expected a CSV with columns 'ms' and 'key'"),
    ("file,ms\nop-unknown.mlpackage,1\n", "file 'op-unknown.mlpackage' is not in manifest.csv"),
    ("key,ms,milliseconds\n{key},1,2\n", "unknown column(s) milliseconds"),
])
def test_bad_timings_are_one_line_exit_2_and_write_nothing(exported, two_ops, tmp_path, capsys, text, message):
    _, out = exported
    path = (out if "file" in text else tmp_path) / "timings.csv"
    path.write_text(text.format(key=next(iter(two_ops))))
    tables = tmp_path / "tables"
    assert main(["lut", "import", str(path), "--device", "iphone12", "--resolution", "64", "--tables", str(tables)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not tables.exists() or not any(tables.iterdir())


def test_export_is_for_core_ml_devices_only(capsys, tmp_path):
    assert main(["lut", "export", "--device", "cpu", "--tables", str(tmp_path)]) == 2
    assert "use `nas lut build --device cpu`" in capsys.readouterr().err


def test_a_manifest_without_its_columns_is_one_line(tmp_path, capsys):
    (tmp_path / ondevice.MANIFEST).write_text("name,op\na,b\n")
    (tmp_path / "timings.csv").write_text("file,ms\na,1\n")
    assert main(["lut", "import", str(tmp_path / "timings.csv"), "--device", "iphone12", "--resolution", "64",
                 "--tables", str(tmp_path / "tables")]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected the columns 'file' and 'key'" in err and len(err.splitlines()) == 1
