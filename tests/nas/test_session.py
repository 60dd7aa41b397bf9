"""The library path under `nas slim`: a session opened and slimmed without the CLI."""
import inspect

from nas import cli
from nas import checkpoint
from nas.session import SupernetSession, quickstart, targets_label
from nas.slim import reachable_floor
from supernets.config import ArchConfig


def test_the_cli_flags_default_to_the_library_defaults():
    """The quickstart calls the library with its defaults; `nas slim` with its flags. They must
    be the same numbers, or the two would slim differently."""
    slim = vars(cli._parse(["slim", "--target-ms", "1"]))
    opened = inspect.signature(SupernetSession.open).parameters
    for param, flag in {"threads": "threads", "calib_images": "calib_images", "val_images": "val_images",
                        "seed": "seed", "channel_order_rule": "channel_order"}.items():
        assert opened[param].default == slim[flag], param
    slimmed = inspect.signature(SupernetSession.slim).parameters
    assert slimmed["proposals"].default == slim["proposals"]
    assert slimmed["last_step"].default == slim["last_step"]
    started = inspect.signature(quickstart).parameters
    flags = vars(cli._parse(["quickstart"]))
    for param in ("epochs", "target_ms", "target_fraction"):
        assert started[param].default == flags[param], param


def test_targets_label_lists_the_targets_largest_first():
    assert targets_label([7, 3, 1.6]) == "7-3-1.6ms"


def test_a_session_slims_and_writes_what_the_cli_reports(tiny_run, tmp_path):
    session = SupernetSession.open(supernet=tiny_run, runs_dir=tmp_path, device="iphone12",
                                   val_images=100, calib_images=32, progress=False)
    assert session.family == "efficientformer" and session.ckpt_path == tiny_run
    start = session.net.initial_choice()
    start_ms = session.predictor(start.to_config(session.net.space, num_classes=session.net.num_classes))
    floor_ms = reachable_floor(session.net, session.predictor, start)
    target = round((start_ms + floor_ms) / 2, 3)   # between the floor and the start: at least one step
    emitted = session.slim([target], tmp_path / "out")
    assert [p.name for p in emitted.configs] == [f"efficientformer@iphone12-{target:g}ms.yaml"]
    cfg = ArchConfig.load(emitted.configs[0])
    assert cfg.meta["predicted_ms"] <= target and cfg.meta["steps"] >= 1 and cfg.meta["supernet"] == str(tiny_run)
    assert cfg.meta["table"].endswith("iphone12@64.yaml") and len(cfg.meta["table_sha256"]) == 16
    assert checkpoint.load(emitted.weights[0], (checkpoint.MODEL_FORMAT,))["config"]["name"] == cfg.name
    # the trajectory, its plot, and where the milliseconds of its first and last step go
    assert [p.name.removeprefix(f"efficientformer@iphone12-{target:g}ms") for p in emitted.trajectory] == [
        ".trajectory.csv", ".trajectory.png", ".breakdown.png"]
    assert all(p.is_file() for p in emitted.trajectory)
