"""The README's main job, end to end, and the table's prediction of what it emits."""
import pytest

from lut import build
from lut.table import LatencyTable
from nas.cli import main
from supernets.config import ArchConfig


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="open: cache-cold op timings overpredict small configs by ~19% median "
                   "(experiments/lut_fidelity/result.md); the ±10% goal is not met yet")
def test_quickstart_config_latency_matches_prediction(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["quickstart", "--runs", str(runs), "--epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "quickstart done" in out
    config_path = next(runs.glob("*/slim/efficientformer@cpu-*ms.yaml"))
    cfg = ArchConfig.load(config_path)
    table = LatencyTable.load(runs / "tables" / "cpu@224.yaml")
    predicted = table.predict(cfg)
    measured = build.measure_models({"emitted": cfg}, threads=1, rounds=7)["emitted"].ms
    assert abs(measured - predicted) / predicted <= 0.10, (predicted, measured)
