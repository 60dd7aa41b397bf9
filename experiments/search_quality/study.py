"""What the equal-latency study (`run.py`) and its re-ranking (`rerank.py`) share: the device and
the supernet estimates they score, the study's supernet and L1, the ranking table, and a resumable
wall-time log. Imported by both scripts (this folder is the first entry of their `sys.path`)."""
from __future__ import annotations

import contextlib
import csv
import json
import threading
import time
from pathlib import Path

import search_spaces
from nas import checkpoint
from nas.evaluate import Evaluator
from nas.train import Recipe, supernet_recipe, train_or_resume
from nas.train_model import MODEL
from nas.core import io
from supernets.config import ArchConfig, Choice, SearchSpace

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEVICE = "iphone12"
# the supernet's estimates of a candidate: (name, calibration images, validation images)
ESTIMATES = (("slim", 256, 1000), ("val-all", 256, 10_000), ("calib-2k", 2048, 10_000))
# "slim" names slimming's subsets when the study began; its defaults are calib-2k's since rerank.py
SUBSETS_NOTE = {"slim": ": slim's before rerank.py", "calib-2k": ": slim's default since"}
TIMES_LOCK = threading.Lock()


@contextlib.contextmanager
def timing(times: dict, key: str, work: Path):
    """Add the block's wall time to `times[key]` (``times.json``, so a resume adds to it)."""
    t0 = time.time()
    yield
    with TIMES_LOCK:
        times[key] = times.get(key, 0.0) + time.time() - t0
        io.write_text(work / "times.json", json.dumps(times, indent=1))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def evaluated(trajectory: list[dict]) -> int:
    """Sub-networks a slimming trajectory scored: its start and every step's candidates (the
    budget its search gets)."""
    return 1 + sum(int(r["candidates"]) for r in trajectory)


def choice_of(config: Path, space: SearchSpace) -> Choice:
    """The supernet choice of a config file (at the space's class count, as the supernet has)."""
    return Choice.from_config(ArchConfig.load(config).replace(num_classes=space.num_classes), space)


def trained(out: Path, epochs: int) -> bool:
    return (out / MODEL).is_file() and checkpoint.load(out / MODEL, (checkpoint.MODEL_FORMAT,))["epoch"] >= epochs


def published_l1(classes: int) -> ArchConfig:
    """EfficientFormer-L1 as the study trains it: the dataset's classes, no distillation head."""
    return ArchConfig.load(search_spaces.variant_path("efficientformer", "l1")).replace(
        num_classes=classes, head={"distillation": False}, name="l1", meta={})


def train_study_supernet(run_dir: Path, **fields) -> None:
    """`nas train-supernet` with the study's recipe (`fields` over the product's defaults), as a
    library call: a finished run is kept, an interrupted one resumed."""
    train_or_resume(supernet_recipe(device="auto", **fields), run_dir, progress=False)


def supernet_estimates(net, recipe: Recipe, choices: dict[str, Choice], path: Path) -> dict:
    """Each estimate of ESTIMATES for every named sub-network, ``{estimate: {name: [top-1, loss]}}``:
    BN recalibrated, inherited weights, as slimming scores. Kept in `path`; a resume adds the missing."""
    inherited = json.loads(path.read_text()) if path.is_file() else {}
    for estimate, calib, val in ESTIMATES:
        scores = inherited.setdefault(estimate, {})
        if set(choices) - set(scores):
            evaluator = Evaluator.of_data(recipe.data, recipe.img_size, recipe.seed, calib, val)
            for name, choice in choices.items():
                if name not in scores:
                    sc = evaluator(net.subnet(choice))
                    scores[name] = [round(sc.accuracy, 2), round(sc.loss, 4)]
            io.write_text(path, json.dumps(inherited, indent=1))
    return inherited


def rank_lines(rows: list[dict]) -> list[str]:
    """Markdown table rows: Kendall τ and Spearman ρ of each estimate (``inherited_*`` columns;
    the loss negated) against the rows' trained ``top1``; then of params and MACs, the rankings
    that need no supernet, which an estimate has to beat to be worth its training."""
    from scipy.stats import kendalltau, spearmanr

    trained = [float(r["top1"]) for r in rows]
    out = []
    for label, key, sign in [*((f"accuracy, {e} ({calib} calib / {val} val images)" + SUBSETS_NOTE.get(e, ""),
                                f"inherited_{e}", 1)
                               for e, calib, val in ESTIMATES), ("loss, slim's subset", "inherited_loss", -1),
                             ("params (no supernet)", "params_m", 1), ("MACs (no supernet)", "macs_g", 1)]:
        est = [sign * float(r[key]) for r in rows]
        out.append(f"| {label} | {kendalltau(est, trained)[0]:.2f} | {spearmanr(est, trained)[0]:.2f} |")
    return out


def choice_at(space: SearchSpace, summary: str, template: ArchConfig) -> Choice:
    """The choice whose config summary the trajectory recorded (``w:[kinds] | ...``)."""
    stages = []
    for part, st in zip(summary.split(" | "), template.stages):
        width, kinds = part.split(":", 1)
        blocks = []
        for token in kinds.strip("[]").split():
            kind, _, times = token.partition("×")
            blocks += [kind] * int(times or 1)
        stages.append({"width": int(width.split(",")[0]), "blocks": blocks})
    # EfficientFormer's stem is as wide as its first stage (it has no embedding there)
    cfg = ArchConfig.from_dict({**template.to_dict(), "stem": {"width": stages[0]["width"]}, "stages": stages,
                                "name": "", "meta": {}})
    return Choice.from_config(cfg.replace(num_classes=space.num_classes), space)
