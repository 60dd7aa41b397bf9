"""Does a latency table predict whole networks? Random configs of a space, predicted vs measured.

``validate`` times the sampled networks end to end (interleaved rounds, the table's threads) and
compares them with ``table.predict``. It also re-times the table's calibration networks in the
same rounds: their speed now against their speed when the table was built is the machine's
*drift*, reported next to the errors because a shared machine can run a whole phase 20-30% slow
and no table can predict that.
"""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from lut import build
from lut.table import LatencyTable
from nas.core import io
from supernets.config import ArchConfig, SearchSpace
from supernets.registry import random_choice


def error_stats(signed: list[float]) -> dict[str, float]:
    """Median and 95th-percentile |error| (%), shares within ±5 % and ±10 %, median signed error (%)."""
    errs = sorted(abs(e) for e in signed)
    return {"median_abs_error_pct": statistics.median(errs),
            "p95_abs_error_pct": errs[min(len(errs) - 1, round(0.95 * (len(errs) - 1)))],
            "within_5_pct": sum(e <= 5 for e in errs) / len(errs),
            "within_10_pct": sum(e <= 10 for e in errs) / len(errs),
            "median_signed_error_pct": statistics.median(signed)}


@dataclass
class Validation:
    rows: list[dict]   # config, predicted_ms, measured_ms, error_pct[, drift_corrected_error_pct, round_spread_pct], summary
    drift: float | None  # median over the calibration networks of (time now / time at build); None: uncalibrated

    def stats(self, drift_corrected: bool = False) -> dict[str, float]:
        """`error_stats`, and Spearman's ρ between predicted and measured (does the table rank
        networks as they run? what a search needs of it)."""
        from scipy.stats import spearmanr

        out = error_stats([r["drift_corrected_error_pct" if drift_corrected else "error_pct"] for r in self.rows])
        if len(self.rows) > 2:
            rho = spearmanr([r["predicted_ms"] for r in self.rows], [r["measured_ms"] for r in self.rows])[0]
            out["spearman"] = float(rho)
        return out

    def summary(self) -> str:
        def line(st: dict[str, float]) -> str:
            return (f"median |err| {st['median_abs_error_pct']:.2f}%  p95 |err| {st['p95_abs_error_pct']:.2f}%  "
                    f"within ±5%: {100 * st['within_5_pct']:.0f}%  ±10%: {100 * st['within_10_pct']:.0f}%  median signed {st['median_signed_error_pct']:+.2f}%"
                    + (f"  Spearman {st['spearman']:.3f}" if "spearman" in st else ""))
        text = f"samples {len(self.rows)}  {line(self.stats())}"
        spreads = [r["round_spread_pct"] for r in self.rows if "round_spread_pct" in r]
        if spreads:
            # a quiet host times a network within ~1-3 % from round to round; a busy one, 10 %
            text += f"\n  a network's time varied {statistics.median(spreads):.1f}% between rounds (median std)"
        if self.drift:
            text += (f"\n  the table's calibration networks now take {self.drift:.3f}x their build-time latency; "
                     f"at build-time speed: {line(self.stats(drift_corrected=True))}")
        return text


def validate(table: LatencyTable, space: SearchSpace, num_classes: int | None = None, *, samples: int = 30,
             seed: int = 1, threads: int = 1, rounds: int = 5, predictor=None, progress: bool = True) -> Validation:
    """Predict and measure `samples` random configs of `space` (seed 1 by default, so they differ
    from the calibration configs, seed 0)."""
    rng = random.Random(seed)
    configs = {f"v{i:02d}": random_choice(space, rng).to_config(space, num_classes) for i in range(samples)}
    return compare(table, configs, threads=threads, rounds=rounds, predictor=predictor, progress=progress)


def compare(table: LatencyTable, configs: dict[str, ArchConfig], *, threads: int = 1, rounds: int = 5,
            predictor=None, progress: bool = True) -> Validation:
    """Predicted vs measured latency of named configs. The table's calibration networks are timed
    in the same rounds; `measured / drift` is the latency at the machine speed of the build.
    `predictor` (default ``table.predict``) may measure missing ops on demand."""
    predict = predictor or table.predict
    predicted = {n: predict(c) for n, c in configs.items()}
    # the calibration networks of the configs' families (those of their family's cache model)
    cal_configs, cal_measured = {}, {}
    for family in dict.fromkeys(c.family for c in configs.values()):
        cal = table.calibration(family)
        cal_spaces = [SearchSpace.from_dict(s) for s in cal.get("spaces", ())]
        if cal_spaces:
            for name, cfg in build.calibration_configs(cal_spaces, cal["num_classes"], cal["samples"], cal["seed"],
                                                       cal.get("draw", "uniform")).items():
                cal_configs[f"{family}:{name}"], cal_measured[f"{family}:{name}"] = cfg, cal["measured_ms"][name]
    items = _interleaved(configs, cal_configs)
    bar = tqdm(total=len(items) * rounds, desc="timing networks", unit="net", disable=not progress, leave=False)
    per_round: dict[str, list[float]] = {}
    try:
        measured = build.measure_models(items, threads=threads, rounds=rounds, progress=bar.update,
                                        backend=build.table_backend(table),
                                        on_round=lambda record: per_round.update(record["models"]))
    finally:
        bar.close()
    drift = (statistics.median(measured[n].ms / cal_measured[n] for n in cal_configs)
             if cal_configs else None)
    at_build_speed = _at_build_speed(per_round, configs, cal_measured) if cal_configs else {}
    rows = []
    for n, c in configs.items():
        m = measured[n].ms
        row = {"config": n, "predicted_ms": round(predicted[n], 4), "measured_ms": round(m, 4),
               "error_pct": round(100 * (predicted[n] / m - 1), 3)}
        if drift:
            row["drift_corrected_error_pct"] = round(100 * (predicted[n] / at_build_speed[n] - 1), 3)
        if len(per_round.get(n, ())) > 1:   # how much the host moved the network between rounds
            row["round_spread_pct"] = round(100 * statistics.pstdev(per_round[n]) / statistics.mean(per_round[n]), 2)
        rows.append({**row, "summary": c.summary()})
    return Validation(rows, drift)


def _interleaved(configs: dict[str, ArchConfig], cal_configs: dict[str, ArchConfig]) -> dict[str, ArchConfig]:
    """The configs with the calibration networks spread evenly among them: a round's drift is
    then measured across the round, not at its end."""
    cal = list(cal_configs.items())
    due = [(j + 1) * len(configs) / (len(cal) + 1) for j in range(len(cal))]   # after how many configs
    out: dict[str, ArchConfig] = {}
    for i, (name, cfg) in enumerate(configs.items(), start=1):
        out[name] = cfg
        out.update(c for c, after in zip(cal, due) if i - 1 < after <= i)
    out.update(c for c, after in zip(cal, due) if after > len(configs) or after <= 0)
    return out


def _at_build_speed(per_round: dict[str, list[float]], configs, cal_measured: dict[str, float]) -> dict[str, float]:
    """Each config's latency at the machine speed of the build: per round, its time divided by the
    round's drift (median over the calibration networks of their time in the round / at the
    build), then the median over rounds. A shared host changes speed between rounds (a validation
    has drifted 1.26x while configs caught fast spells in single rounds); one drift for the whole
    validation leaves that in the errors."""
    rounds = len(next(iter(per_round.values())))
    drift = [statistics.median(per_round[n][r] / cal_measured[n] for n in cal_measured) for r in range(rounds)]
    return {n: statistics.median(per_round[n][r] / drift[r] for r in range(rounds)) for n in configs}


def write(result: Validation, out_dir: str | Path, title: str) -> list[Path]:
    """``validation.csv`` and ``scatter.png`` (predicted vs measured with the ±10% band)."""
    out = Path(out_dir)
    io.write_csv(out / "validation.csv", result.rows)
    png = out / "scatter.png"
    with io.png_figure(png, figsize=(4.8, 4.6)) as (fig, ax):
        xs, ys = [r["measured_ms"] for r in result.rows], [r["predicted_ms"] for r in result.rows]
        lo, hi = min(xs + ys) * 0.9, max(xs + ys) * 1.1
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="gray", alpha=0.15, label="±10%")
        ax.scatter(xs, ys, s=14)
        ax.set_xlabel("measured end-to-end (ms)")
        ax.set_ylabel("predicted from table (ms)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
    return [out / "validation.csv", png]
