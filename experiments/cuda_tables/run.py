"""Do CUDA latency tables price whole networks? Per-op timings as a network sees them (issue #34).

On a GPU at batch 1 the old table timed every op alone (CUDA events around one call, then a
synchronise), so each op paid a whole launch latency that a network, queueing its ops, mostly
hides. The product now times a hot op with its calls queued back to back and prices it in a
network by a factor per kind of op, fitted on whole networks (``lut.backends.CudaRunner``,
``lut.build.fit_kind_factors``); README.md here says why.

One pass on the GPU (``--measure``) times, in the same interleaved rounds:

* every op of the sampled networks twice: as the product times it now (cold: alone after the
  GPU's L2 is evicted; hot: calls queued) and as it did before (cold: alone, the host's cache
  evicted; hot: each call alone);
* every sampled network end to end (``blocked_autorange``, as ``nas lut validate``).

Networks: for each family, `--calibration` random configs of its paper space (seed 0, what
``nas lut build`` calibrates on) and `--samples` others (seed 1, what ``nas lut validate``
draws), at 224 px. The raw timings go to ``raw.json``; the analysis (no GPU needed) fits each
method on the calibration networks of both families and scores the validation networks:

    python experiments/cuda_tables/run.py --measure --out DIR    # on the GPU machine
    python experiments/cuda_tables/run.py --raw DIR/raw.json      # anywhere: writes result.md
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

import search_spaces
from lut import backends, build, graph, measure
from lut.table import BYTES_PER_PARAM
from lut.validate import error_stats
from supernets.config import SearchSpace
from supernets.layers import count_params
from supernets.registry import random_choice

HERE = Path(__file__).resolve().parent
FAMILIES = ("efficientformer", "fastvit")
RESOLUTION = 224


class AloneRunner(backends.CudaRunner):
    """The CUDA runner as it was before: every call timed alone, the host's cache evicted."""

    def time_calls(self, x: torch.Tensor, calls: int) -> list[float]:
        return self.time_alone(x, calls)

    evict_cache = None   # time_rounds then reads its host scratch buffer, as it did


def sampled(family: str, calibration: int, samples: int) -> dict[str, dict]:
    space = SearchSpace.load(search_spaces.space_path(family)).replace(resolution=RESOLUTION)
    cal = build.calibration_configs([space], None, calibration, seed=0)
    rng = random.Random(1)   # as `nas lut validate`
    val = {f"v{i:02d}": random_choice(space, rng).to_config(space) for i in range(samples)}
    return {"calibration": cal, "validation": val}


def measure_all(args) -> dict:
    nets = {}
    for family in FAMILIES:
        for split, configs in sampled(family, args.calibration, args.samples).items():
            for name, cfg in configs.items():
                nets[f"{family}/{split}/{name}"] = cfg
    ops = build.ops_for(nets.values())
    op_items = build._op_items(ops)
    items = [(f"{method}|{k}", runner(m), x.cuda())
             for k, m, x in op_items for method, runner in (("queued", backends.CudaRunner), ("alone", AloneRunner))]
    random.Random(0).shuffle(items)   # as `nas lut build`: a slow spell spreads over every kind of op
    models = [(n, backends.CudaRunner(m), x.cuda()) for n, m, x in build._model_items(nets)]
    print(f"{len(nets)} networks, {len(ops)} ops ({len(items)} timed items), {args.rounds} rounds", flush=True)
    t0 = time.time()
    timed = measure.time_rounds(items, models, rounds=args.rounds, calls=args.calls,
                                model_min_run_time=args.model_min_run_time,
                                on_round=lambda rec: print(f"  round done ({time.time() - t0:.0f} s)", flush=True))
    return {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "host": platform.node(),
        "rounds": args.rounds, "calls": args.calls, "seconds": round(time.time() - t0, 1),
        "params": {k: count_params(m) for k, m, _ in op_items},
        "ops": {name: {"cold": timed.cold[name].ms, "hot": timed.hot[name].ms} for name, _, _ in items},
        "networks": {n: {"ms": timed.models[n].ms, "keys": graph.keys(cfg), "ops": len(graph.ops(cfg)),
                         "config": cfg.to_dict()} for n, cfg in nets.items()},
    }


# ------------------------------------------------------------------------------------------ analysis
METHODS = {   # name: (op timings, how they add up to a network)
    "before: ops timed alone, cache blend": ("alone", "blend"),
    "ops queued, cache blend": ("queued", "blend"),
    "ops timed alone, hot × kind factors": ("alone", "kinds"),
    "after: ops queued, hot × kind factors (the product)": ("queued", "kinds"),
}


def analyse(raw: dict) -> tuple[list[dict], dict]:
    """Each method fitted on the calibration networks (as ``lut.build`` fits a table), then its
    prediction of every validation network: (rows, {method: what it fitted, in words})."""
    nets = raw["networks"]

    def sums(name: str, timing: str) -> tuple[float, float, float, dict[str, float]]:
        keys = nets[name]["keys"]
        by_kind: dict[str, float] = {}
        for k in keys:
            by_kind[graph.key_kind(k)] = by_kind.get(graph.key_kind(k), 0.0) + raw["ops"][f"{timing}|{k}"]["hot"]
        ops = [raw["ops"][f"{timing}|{k}"] for k in keys]
        return (sum(o["hot"] for o in ops), sum(o["cold"] - o["hot"] for o in ops),
                BYTES_PER_PARAM * sum(raw["params"][k] for k in keys), by_kind)

    cal = [n for n in nets if "/calibration/" in n]
    val = [n for n in nets if "/validation/" in n]
    measured = [nets[n]["ms"] for n in cal]
    rows, fitted = [], {}
    for method, (timing, how) in METHODS.items():
        if how == "blend":
            h, g, w, _ = zip(*(sums(n, timing) for n in cal))
            model = build.fit_cache_model(list(h), list(g), measured, list(w))
            fitted[method] = f"blend {model.base:.2f} {model.slope:+.3f}·ln(W/MiB)"

            def predict(n):
                hot, gap, weight, _ = sums(n, timing)
                return hot + model.blend(weight) * gap
        else:
            factors, ridge = build.fit_kind_factors([sums(n, timing)[3] for n in cal], measured)
            fitted[method] = f"λ {ridge:g}; " + ", ".join(f"{k} {f:.2f}" for k, f in sorted(factors.items()))

            def predict(n):
                return sum(factors.get(k, 1.0) * ms for k, ms in sums(n, timing)[3].items())
        for n in val:
            p = predict(n)
            rows.append({"method": method, "network": n, "family": n.split("/")[0], "predicted_ms": p,
                         "measured_ms": nets[n]["ms"], "error_pct": 100 * (p / nets[n]["ms"] - 1)})
    return rows, fitted


def report(raw: dict, out: Path) -> str:
    rows, fitted = analyse(raw)
    nets = raw["networks"]
    lines = [
        "# CUDA tables against whole networks: ops timed alone (before) and queued (after)",
        "",
        "    python experiments/cuda_tables/run.py --measure --out DIR   # on the GPU: raw.json",
        "    python experiments/cuda_tables/run.py --raw DIR/raw.json     # this file",
        "",
        f"{raw['gpu']}, torch {raw['torch']}; {raw['rounds']} interleaved rounds of {raw['calls']} calls per op, "
        f"{len(raw['params'])} ops timed both ways, {len(nets)} networks timed end to end, "
        f"{raw['seconds']:.0f} s of timing. Families: {', '.join(FAMILIES)} (paper spaces, {RESOLUTION} px, "
        f"1000 classes). Each method is fitted on the {sum('/calibration/' in n for n in nets)} calibration "
        f"networks (seed 0, both families) and scored on the "
        f"{sum('/validation/' in n for n in nets)} validation networks (seed 1), all from the same rounds.",
        "",
        "| method | family | median \\|err\\| | p95 \\|err\\| | within ±5 % | within ±10 % | median signed |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        for family in (*FAMILIES, "both"):
            mine = [r["error_pct"] for r in rows if r["method"] == method and family in (r["family"], "both")]
            st = error_stats(mine)
            within5 = sum(abs(e) <= 5 for e in mine) / len(mine)
            lines.append(f"| {method} | {family} | {st['median_abs_error_pct']:.1f} % | {st['p95_abs_error_pct']:.1f} % | "
                         f"{100 * within5:.0f} % | {100 * st['within_10_pct']:.0f} % | {st['median_signed_error_pct']:+.1f} % |")
    lines += ["", "What each method fitted on the calibration networks:", ""]
    lines += [f"- {method}: {fitted[method]}" for method in METHODS]
    ms = sorted(n["ms"] for n in nets.values())
    lines += ["", f"Networks measured {ms[0]:.2f}–{ms[-1]:.2f} ms end to end "
                  f"({min(n['ops'] for n in nets.values())}–{max(n['ops'] for n in nets.values())} ops).", ""]
    text = "\n".join(lines)
    (out / "result.md").write_text(text + "\n")
    with open(out / "validation.csv", "w") as f:
        f.write("method,network,predicted_ms,measured_ms,error_pct\n")
        for r in rows:
            f.write(f"{r['method']},{r['network']},{r['predicted_ms']:.4f},{r['measured_ms']:.4f},{r['error_pct']:.2f}\n")
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measure", action="store_true", help="time on this machine's GPU, write OUT/raw.json")
    ap.add_argument("--raw", help="analyse this raw.json (default: OUT/raw.json)")
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--calibration", type=int, default=12, help="calibration networks per family")
    ap.add_argument("--samples", type=int, default=30, help="validation networks per family")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=7)
    ap.add_argument("--model-min-run-time", type=float, default=0.05)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.measure:
        if not torch.cuda.is_available():
            print("error: --measure needs a CUDA GPU (analyse a recorded raw.json with --raw)", file=sys.stderr)
            return 2
        raw = measure_all(args)
        (out / "raw.json").write_text(json.dumps(raw))
    raw = json.loads(Path(args.raw or out / "raw.json").read_text())
    print(report(raw, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
