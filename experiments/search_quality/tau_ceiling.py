"""The Kendall τ a perfect estimator could reach against trained top-1 that seeds make noisy.

The study compares the supernet's ranking with one training per candidate (several for S and
L1). Two trainings of one network differ by the seed alone, so even an estimator that knew
every network's true mean accuracy would not rank the measured values perfectly. This gives
that ceiling, so that a τ short of the goal can be read against what the budget can show:

* the seed standard deviation σ is pooled over the candidates trained with several seeds;
* the true means' spread is the measured one less σ² (the measurements add the noise);
* τ(true means, true means + N(0, σ²)) is averaged over seeded draws (mean, 10th, 90th
  percentile). Candidates with several seeds get σ/√seeds, as their means do.

    python experiments/search_quality/tau_ceiling.py experiments/search_quality/h200-8ep/candidates.csv
"""
from __future__ import annotations

import csv
import statistics
import sys

import numpy as np
from scipy.stats import kendalltau


def pooled_seed_sd(per_seed: list[list[float]]) -> float | None:
    """σ pooled over the candidates with two or more seeds (None if there is none)."""
    several = [v for v in per_seed if len(v) > 1]
    dof = sum(len(v) - 1 for v in several)
    if not dof:
        return None
    return (sum(statistics.variance(v) * (len(v) - 1) for v in several) / dof) ** 0.5


def tau_ceiling(per_seed: list[list[float]], draws: int = 4000, seed: int = 0) -> dict | None:
    """Kendall τ of a perfect estimator against these candidates' measured means (their seeds given)."""
    sd = pooled_seed_sd(per_seed)
    if sd is None or len(per_seed) < 3:
        return None
    means = np.array([statistics.mean(v) for v in per_seed])
    noise = sd / np.sqrt([len(v) for v in per_seed])
    spread = means.std(ddof=1)
    true_sd = max(spread ** 2 - float(np.mean(noise ** 2)), 0.0) ** 0.5
    truth = means.mean() + (means - means.mean()) * (true_sd / spread if spread else 0.0)
    rng = np.random.default_rng(seed)
    taus = np.array([kendalltau(truth, truth + rng.normal(0.0, noise))[0] for _ in range(draws)])
    return {"seed_sd": sd, "true_sd": true_sd, "tau": float(np.nanmean(taus)),
            "p10": float(np.nanpercentile(taus, 10)), "p90": float(np.nanpercentile(taus, 90))}


def describe(c: dict) -> str:
    return (f"A perfect estimator would reach Kendall τ {c['tau']:.2f} (10th–90th percentile "
            f"{c['p10']:.2f}–{c['p90']:.2f}) against these trained top-1s: seed σ {c['seed_sd']:.2f} "
            f"points (pooled), true spread of the means {c['true_sd']:.2f}.")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: tau_ceiling.py CANDIDATES_CSV (from experiments/search_quality/run.py)", file=sys.stderr)
        return 2
    with open(argv[0], newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["candidate"].startswith("C")]
    if rows and "per_seed" not in rows[0]:
        print(f"{argv[0]} has no per_seed column: rerun the study's report (run.py) to add it", file=sys.stderr)
        return 2
    seen, per_seed = set(), []
    for r in rows:   # a network listed twice (S = Sp) is one network
        if r["config"] not in seen:
            seen.add(r["config"])
            per_seed.append([float(v) for v in r["per_seed"].split()])
    c = tau_ceiling(per_seed)
    print(describe(c) if c else "fewer than 3 networks, or no candidate with several seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
