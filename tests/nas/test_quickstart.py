"""The README's main job, end to end, and the table's prediction of what it emits."""
import csv

import pytest

from lut import validate
from lut.table import LatencyTable
from nas.cli import main
from supernets.config import ArchConfig


@pytest.mark.slow
def test_quickstart_config_latency_matches_prediction(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["quickstart", "--runs", str(runs), "--epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "quickstart done" in out
    config_path = next(runs.glob("*/slim/efficientformer@cpu-*ms.yaml"))
    cfg = ArchConfig.load(config_path)
    table = LatencyTable.load(runs / "tables" / "cpu@224.yaml")
    # The host is shared: between the build and this check whole phases run up to ~20% slower or
    # faster, and networks drift unevenly (README, experiments/lut_fidelity). The table's own
    # calibration networks, re-timed in the same rounds, estimate the machine's speed now; the
    # prediction must hold at the speed now (raw) or at the build's speed (drift-corrected). A
    # wrong table (a lost op, a doubled op, a bad cache model) fails both. A check caught in a
    # phase change is repeated, at most three times.
    tries = []
    for _ in range(3):
        result = validate.compare(table, {"emitted": cfg}, rounds=7, progress=False)
        row = result.rows[0]
        tries.append((row["predicted_ms"], row["measured_ms"], row["error_pct"],
                      row["drift_corrected_error_pct"], round(result.drift, 3)))
        if min(abs(row["error_pct"]), abs(row["drift_corrected_error_pct"])) <= 10:
            break
    assert min(abs(tries[-1][2]), abs(tries[-1][3])) <= 10, tries


@pytest.mark.slow
def test_the_mission_command_on_the_shipped_iphone12_table(tmp_path, capsys):
    """`nas slim --target-ms 1.6 --device iphone12` on a fresh machine: the shipped estimated
    table prices the supernet's configs (nothing estimated on demand), the emitted config meets
    the target and exports."""
    runs = tmp_path / "runs"
    assert main(["train-supernet", "--runs", str(runs), "--epochs", "1", "--no-progress"]) == 0
    assert main(["slim", "--target-ms", "1.6", "--device", "iphone12", "--runs", str(runs), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "estimating" not in out
    config_path = next(runs.glob("*/slim/efficientformer@iphone12-1.6ms.yaml"))
    cfg = ArchConfig.load(config_path)
    assert cfg.meta["predicted_ms"] <= 1.6
    # the supernet's start may already meet 1.6 ms: slim once more from there to 80% of it
    trajectory = next(runs.glob("*/slim/efficientformer@iphone12-1.6ms.trajectory.csv"))
    start_ms = float(next(csv.DictReader(open(trajectory)))["latency_ms"])
    target = round(0.8 * start_ms, 3)
    assert main(["slim", "--target-ms", str(target), "--device", "iphone12", "--runs", str(runs), "--no-progress"]) == 0
    assert "estimating" not in capsys.readouterr().out
    config_path = next(runs.glob(f"*/slim/efficientformer@iphone12-{target:g}ms.yaml"))
    cfg = ArchConfig.load(config_path)
    assert cfg.meta["predicted_ms"] <= target and cfg.meta["steps"] >= 1
    assert not (runs / "tables" / "iphone12@224.yaml").exists()     # nothing new to write
    assert main(["export", str(config_path), "--format", "onnx"]) == 0
