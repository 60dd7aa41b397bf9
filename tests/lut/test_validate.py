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
    assert all(0 <= r["round_spread_pct"] < 100 for r in result.rows) and "between rounds" in result.summary()
    for r in result.rows:   # at build speed, round by round: close to one drift for the run
        assert abs(r["drift_corrected_error_pct"] - 100 * (r["predicted_ms"] * result.drift / r["measured_ms"] - 1)) \
            < 0.5 * (100 + abs(r["error_pct"]))
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


def test_drift_is_taken_out_round_by_round():
    # build-time calibration networks at 10 and 20 ms; the machine runs round 0 at half speed,
    # round 1 at full speed and round 2 at 0.8x, and a config takes 30 ms at full speed, but
    # caught a fast spell in round 2 (no other network did)
    per_round = {"cal:a": [20.0, 10.0, 12.5], "cal:b": [40.0, 20.0, 25.0], "v00": [60.0, 30.0, 30.0]}
    fixed = validate._at_build_speed(per_round, {"v00": None}, {"cal:a": 10.0, "cal:b": 20.0})
    assert fixed["v00"] == 30.0   # median of 30, 30 and 24: one fast round does not move it


def test_calibration_networks_are_spread_through_a_round():
    configs = {f"v{i:02d}": i for i in range(20)}
    cal = {f"f:cal{j:02d}": j for j in range(12)}
    order = list(validate._interleaved(configs, cal))
    assert sorted(order) == sorted([*configs, *cal])
    first, last = order.index("f:cal00"), order.index("f:cal11")
    assert first < 4 and last > len(order) - 4   # not all at the end of the round
