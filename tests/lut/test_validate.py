import csv
import math

from lut import build, validate
from nas.cli import main


def test_validate_predicts_measures_and_writes_csv_and_plot(tiny_space, tmp_path):
    table = build.new_table("cpu", 64, 1)
    build.calibrate(table, [tiny_space], 10, samples=2, rounds=2, progress=False)
    predictor = build.Predictor(table, measurable=True, rounds=2, progress=False)
    result = validate.validate(table, tiny_space, 10, samples=4, rounds=2, predictor=predictor, progress=False)
    assert [r["config"] for r in result.rows] == ["v00", "v01", "v02", "v03"]
    assert result.drift is not None and 0.3 < result.drift < 3
    for r in result.rows:
        assert r["predicted_ms"] > 0 and r["measured_ms"] > 0
        assert math.isclose(r["error_pct"], 100 * (r["predicted_ms"] / r["measured_ms"] - 1), abs_tol=0.05)
    stats = result.stats()
    assert stats["median_abs_error_pct"] <= stats["p95_abs_error_pct"]
    assert "samples 4" in result.summary() and "at build-time speed" in result.summary()
    for r in result.rows:
        assert math.isclose(r["drift_corrected_error_pct"],
                            100 * (r["predicted_ms"] * result.drift / r["measured_ms"] - 1), abs_tol=0.1)
    written = validate.write(result, tmp_path / "out", "tiny")
    assert [p.name for p in written] == ["validation.csv", "scatter.png"]
    with open(written[0]) as f:
        assert len(list(csv.DictReader(f))) == 4
    assert written[1].read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_validate_cli_errors(capsys, tmp_path):
    assert main(["lut", "validate", "--samples", "1", "--runs", str(tmp_path)]) == 2
    assert "--samples 1" in capsys.readouterr().err
    assert main(["lut", "validate", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no latency table for cpu@224" in err and "nas lut build" in err
    assert not (tmp_path / "validate").exists()
