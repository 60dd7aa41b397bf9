"""Every error a user can cause: one line on stderr, exit 2, no partial file."""
import shutil

import pytest

from nas.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def _assert_one_line(code, err, *fragments):
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("nas: error: ")
    for f in fragments:
        assert f in err


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_malformed_yaml(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: efficientformer\nstages: [\n")
    _assert_one_line(*_run(capsys, "show", str(bad)), "malformed YAML")


def test_invalid_config_names_field(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: efficientformer\nresolution: 224\nstages:\n  - {width: 45, blocks: [mb4d]}\n")
    _assert_one_line(*_run(capsys, "show", str(bad)), "stages[0].width: 45 is not a multiple of 16")


def test_unknown_family(capsys, tmp_path):
    _assert_one_line(*_run(capsys, "train-supernet", "--family", "resnet", "--runs", str(tmp_path)),
                     "unknown family 'resnet'")
    assert _files(tmp_path) == []


def test_bad_data_path(capsys, tmp_path):
    _assert_one_line(*_run(capsys, "train-supernet", "--data", str(tmp_path / "nope"), "--runs", str(tmp_path / "r")),
                     "no such directory")
    assert not (tmp_path / "r").exists()


def test_missing_and_corrupt_checkpoint(capsys, tmp_path):
    _assert_one_line(*_run(capsys, "slim", "--target-ms", "5", "--supernet", str(tmp_path / "none.pt"),
                           "--runs", str(tmp_path)), "not found")
    corrupt = tmp_path / "supernet.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    _assert_one_line(*_run(capsys, "slim", "--target-ms", "5", "--supernet", str(corrupt), "--runs", str(tmp_path)),
                     "corrupt")


def test_no_trained_supernet(capsys, tmp_path):
    _assert_one_line(*_run(capsys, "slim", "--target-ms", "5", "--runs", str(tmp_path)),
                     "no trained efficientformer supernet", "nas train-supernet")


def test_target_must_be_positive(capsys, tiny_run, tmp_path):
    _assert_one_line(*_run(capsys, "slim", "--target-ms", "0", "--supernet", str(tiny_run), "--runs", str(tmp_path)),
                     "must be a finite number > 0")


def test_device_without_table(capsys, tiny_run, tmp_path):
    """An Apple device with no published protocol to estimate with (iphone12/13 have one) and no
    imported timings cannot price anything."""
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "devices.yaml").write_text("devices:\n  - {name: iphone15, backend: coreml}\n")
    before = _files(tiny_run.parent), _files(tmp_path)
    _assert_one_line(*_run(capsys, "slim", "--target-ms", "1", "--device", "iphone15", "--supernet", str(tiny_run),
                           "--runs", str(tmp_path)), "no latency table for iphone15@64", "nas lut import")
    assert (_files(tiny_run.parent), _files(tmp_path)) == before


def test_unknown_device(capsys, tiny_run, tmp_path):
    _assert_one_line(*_run(capsys, "slim", "--target-ms", "1", "--device", "pixel9", "--supernet", str(tiny_run),
                           "--runs", str(tmp_path)), "unknown device 'pixel9'")


def test_target_below_smallest_reachable(capsys, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.parent, run)
    code, err = _run(capsys, "slim", "--target-ms", "0.001", "--supernet", str(run / "supernet.pt"),
                     "--runs", str(tmp_path), "--no-progress")
    _assert_one_line(code, err, "below the smallest reachable latency")
    assert not (run / "slim").exists()


def test_help_on_every_command(capsys):
    for argv in (["--help"], ["train-supernet", "--help"], ["lut", "build", "--help"], ["slim", "--help"],
                 ["show", "--help"], ["quickstart", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        assert "usage: nas" in capsys.readouterr().out


def test_a_table_measured_with_another_backend_is_refused(tmp_path, capsys, tiny_run):
    from lut import build

    table = build.new_table("cpu", 64, 1, "onnxruntime")
    table.save(tmp_path / "cpu@64.yaml")
    assert main(["slim", "--target-ms", "1", "--supernet", str(tiny_run), "--tables", str(tmp_path)]) == 2
    assert "measured with backend onnxruntime, but device cpu uses torch-eager" in capsys.readouterr().err


def test_family_that_contradicts_the_supernet(capsys, tiny_run, tmp_path):
    _assert_one_line(*_run(capsys, "slim", "--family", "fmvit", "--supernet", str(tiny_run), "--target-ms", "1",
                           "--device", "iphone12", "--out", str(tmp_path / "o")),
                     "is a efficientformer supernet, not --family fmvit")
    assert not (tmp_path / "o").exists()


def test_show_says_why_a_user_table_is_unusable(capsys, tmp_path):
    import search_spaces
    from lut.table import SCHEMA

    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "iphone12@224.yaml").write_text(f"schema: {SCHEMA}\ndevice: iphone13\nresolution: 224\nentries: {{}}\n")
    assert main(["show", str(search_spaces.variant_path("efficientformer", "l1")), "--tables", str(tables)]) == 0
    out = capsys.readouterr().out
    assert "unusable" in out and "named for iphone12@224 but holds iphone13@224" in out


def test_a_space_file_trains_its_own_family_without_family(tmp_path, monkeypatch):
    """`nas train-supernet --space FILE` takes the family from the file (it used to default to
    EfficientFormer and refuse any other family's space); small/paper keep the default family."""
    import nas.train
    from tests.conftest import TINY_FMVIT_SPACE

    class Started(Exception):
        pass

    def started(recipe, run_dir, **_):
        raise Started(recipe.family)

    monkeypatch.setattr(nas.train, "train_supernet", started)
    space = tmp_path / "fm.yaml"
    space.write_text(TINY_FMVIT_SPACE)
    for flags, family in ((["--space", str(space)], "fmvit"), ([], "efficientformer")):
        with pytest.raises(Started, match=family):
            main(["train-supernet", *flags, "--runs", str(tmp_path / "runs"), "--no-progress"])


def test_the_training_flags_default_to_the_recipes():
    """`nas train` and `nas train-supernet` pass their flags to the recipes: a flag's default that
    differed from the field's would train differently from the library. --device is the one
    deliberate difference: the command takes a GPU when there is one ('auto'), the library the CPU."""
    from nas.cli import MODEL_RECIPE_FLAGS, SUPERNET_RECIPE_FLAGS, _parse
    from nas.supernet_training import Recipe
    from nas.train_model import TrainRecipe

    for argv, flags, recipe in ((["train", "x.yaml"], MODEL_RECIPE_FLAGS, TrainRecipe()),
                                (["train-supernet"], SUPERNET_RECIPE_FLAGS, Recipe())):
        given = vars(_parse(argv))
        differ = {attr for attr, field in flags.items()
                  if given[attr] is not None and given[attr] != getattr(recipe, field)}
        assert differ == {"device"}, (argv[0], differ)
