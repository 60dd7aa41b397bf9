"""The README's main job, end to end, and the table's prediction of what it emits."""
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
    result = validate.compare(table, {"emitted": cfg}, rounds=7, progress=False)
    row = result.rows[0]
    # The machine is shared: whole phases run 5-20% slower (shared/ENVIRONMENT.md). The table's own
    # calibration networks, timed in the same rounds, measure that drift; the assertion is at the
    # machine speed of the build. Both figures are in the message.
    assert result.drift is not None
    assert abs(row["drift_corrected_error_pct"]) <= 10, (row, result.drift)
