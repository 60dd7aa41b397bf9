"""The README's main job end to end, and the mission command on the supernet it trained.

`nas quickstart` runs once for the module (it trains the default supernet and measures this
CPU's table: minutes); the mission command slims that same supernet on the shipped iphone12 table,
as a user who ran the quickstart first would. How well a measured CPU table predicts the networks
it prices is a timing question for a quiet machine: `nas lut validate`, recorded in
`experiments/lut_all_families/` and `experiments/lut_fidelity/`, not a bound a loaded CI host
could break here.
"""

import pytest

from lut import graph
from lut.table import LatencyTable
from nas.cli import main
from supernets.config import ArchConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quickstarted(tmp_path_factory):
    """(runs directory, what the quickstart logged)."""
    runs = tmp_path_factory.mktemp("quickstart") / "runs"
    capture = pytest.MonkeyPatch()
    lines = []
    capture.setattr("nas.cli._say", lines.append)
    try:
        # The same path as the defaults, at a fraction of the cost: 98 % of the start rather than 60 %
        # (one or two slimming steps), 2 timing rounds and 4 calibration networks rather than 7 and
        # 12 (the table's timing is not what is tested here), scored on small subsets.
        assert main(["quickstart", "--runs", str(runs), "--epochs", "1", "--target-fraction", "0.98", "--rounds", "2",
                     "--calibration-samples", "4", "--val-images", "50", "--calib-images", "16",
                     "--no-progress"]) == 0
    finally:
        capture.undo()
    return runs, "\n".join(lines)


def test_quickstart_emits_a_config_its_measured_table_prices(quickstarted, capsys):
    runs, logged = quickstarted
    config_path = next(runs.glob("*/slim/efficientformer@cpu-*ms.yaml"))
    cfg = ArchConfig.load(config_path)
    table = LatencyTable.load(runs / "tables" / "cpu@224.yaml")
    assert table.missing(cfg) == []
    assert all(table.entries[k]["source"] == "measured" for k in graph.keys(cfg))
    # The config records its prediction to 4 decimals (0.1 µs), so that is the agreement to expect.
    assert table.predict(cfg) == pytest.approx(cfg.meta["predicted_ms"], abs=1e-4)
    target = float(config_path.stem.split("-")[-1][:-2])
    assert cfg.meta["predicted_ms"] <= target and cfg.meta["steps"] >= 1
    assert f"slimming to {target:g} ms" in logged
    # the table's calibration networks were timed whole and fitted (the network-level term)
    assert table.calibration(cfg.family)["median_abs_error_pct"] >= 0
    assert main(["show", str(config_path), "--tables", str(runs / "tables")]) == 0
    assert "ms predicted" in capsys.readouterr().out


def test_the_mission_command_on_the_shipped_iphone12_table(quickstarted, capsys):
    """`nas slim --target-ms 1.6 --device iphone12`: the shipped estimated table prices the
    supernet's configs (nothing estimated on demand), the emitted config meets the target and
    exports."""
    runs, _ = quickstarted
    # (scored on small subsets: what is tested is the table and the target, not the ranking; slimming
    # steps on an estimated table are test_slim's)
    assert main(["slim", "--target-ms", "1.6", "--device", "iphone12", "--runs", str(runs), "--val-images", "50",
                 "--calib-images", "16", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "estimating" not in out
    config_path = next(runs.glob("*/slim/efficientformer@iphone12-1.6ms.yaml"))
    cfg = ArchConfig.load(config_path)
    assert cfg.meta["predicted_ms"] <= 1.6
    assert not (runs / "tables" / "iphone12@224.yaml").exists()     # nothing new to write
    assert main(["export", str(config_path), "--format", "onnx"]) == 0
