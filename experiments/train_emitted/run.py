"""Train what the search found: inherited weights (OFA-style fine-tuning) vs from scratch.

On Fashion-MNIST (Debian's ``dataset-fashion-mnist``): an EfficientFormer supernet is trained
once, ``nas slim`` emits a config for an ``iphone12`` target, and ``nas train`` trains that one
config twice with the same recipe and epochs, ``--init inherited`` and ``--init scratch``.
Records top-1 per epoch (raw and EMA weights) for both, CSV + PNG, and the wall time of every step.

Every step is resumable: a killed run continues where it stopped when run again (the supernet
and the two trainings resume from their last finished epoch; finished steps are skipped).

    python experiments/train_emitted/run.py --supernet-epochs 3 --epochs 3 --img-size 32 --target-ms 1.2
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from nas import checkpoint
from nas.cli import main as nas
from nas.core import io
from supernets.config import ArchConfig

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
INITS = ("inherited", "scratch")


def _timed(times: dict, key: str, work: Path, argv: list[str]) -> None:
    t0 = time.time()
    if nas(argv):
        sys.exit(f"failed: nas {' '.join(argv)}")
    times[key] = times.get(key, 0.0) + time.time() - t0   # a resumed step adds its remaining time
    (work / "times.json").write_text(json.dumps(times, indent=1))


def _complete(model_pt: Path) -> bool:
    return model_pt.is_file() and checkpoint.load(model_pt, (checkpoint.MODEL_FORMAT,)).get("complete", False)


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--supernet-epochs", type=int, default=3)
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--target-ms", type=float, default=1.2, help="iphone12 target of the emitted config")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each standalone training")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--work", default=str(REPO / "runs" / "train_emitted"), help="resumable working folder")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    times = json.loads((work / "times.json").read_text()) if (work / "times.json").is_file() else {}
    quiet = ["--no-progress"]

    run_dir = work / "supernet"
    info = run_dir / "run.yaml"
    if not (info.is_file() and "complete: true" in info.read_text()):
        flags = (["--resume", str(run_dir)] if (run_dir / "supernet.pt").is_file() else
                 ["--family", "efficientformer", "--data", args.data, "--img-size", str(args.img_size),
                  "--epochs", str(args.supernet_epochs), "--batch-size", str(args.batch_size), "--device", "cpu",
                  "--runs", str(work), "--name", "supernet"])
        _timed(times, "train-supernet", work, ["train-supernet", *flags, *quiet])

    stem = f"efficientformer@iphone12-{args.target_ms:g}ms"
    config_path = run_dir / "slim" / f"{stem}.yaml"
    if not config_path.with_suffix(".pt").is_file():
        _timed(times, "slim", work, ["slim", "--target-ms", str(args.target_ms), "--device", "iphone12",
                                     "--supernet", str(run_dir / "supernet.pt"), "--tables", str(work / "tables"),
                                     *quiet])

    for init in INITS:
        out = run_dir / "train" / init
        if _complete(out / "model.pt"):
            continue
        flags = (["--resume", str(out), "--epochs", str(args.epochs)] if (out / "model.pt").is_file() else
                 [str(config_path), "--init", init, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                  "--device", "cpu", "--out", str(out)])
        _timed(times, f"train {init}", work, ["train", *flags, *quiet])

    # the trained (EMA) weights in deploy form: ONNX checked on 1,000 validation images, Core ML saved
    export_log = work / "export.txt"
    if not export_log.is_file():
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            _timed(times, "export", work, ["export", str(run_dir / "train" / "inherited" / "model.pt"),
                                           "--format", "all"])
            _timed(times, "eval", work, ["eval", str(run_dir / "train" / "inherited" / "model.pt"),
                                         "--device", "iphone12", "--tables", str(work / "tables"), *quiet])
        export_log.write_text("\n".join(line for line in buf.getvalue().splitlines()
                                        if not line.startswith("Running MIL")))
    report(run_dir, config_path, times, args, export_log.read_text())
    return 0


def report(run_dir: Path, config_path: Path, times: dict, args, exported: str) -> None:
    histories = {init: checkpoint.load(run_dir / "train" / init / "model.pt", (checkpoint.MODEL_FORMAT,))["history"]
                 for init in INITS}
    supernet = checkpoint.load(run_dir / "supernet.pt")
    config = ArchConfig.load(config_path)
    rows = []
    for epoch in range(len(histories["inherited"])):
        row = {"epoch": epoch}
        for init in INITS:
            h = histories[init][epoch]
            row.update({f"{init}_top1": round(h["val_top1"], 2), f"{init}_ema_top1": round(h["ema_top1"], 2),
                        f"{init}_top5": round(h["val_top5"], 2), f"{init}_seconds": round(h["seconds"], 1)})
        rows.append(row)
    with open(HERE / "top1_per_epoch.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    with io.png_figure(HERE / "top1_per_epoch.png", figsize=(6, 4)) as (fig, ax):
        for init, color in zip(INITS, ("C0", "C1")):
            ax.plot([r["epoch"] for r in rows], [r[f"{init}_top1"] for r in rows], "-o", c=color, label=f"{init} (raw)")
            ax.plot([r["epoch"] for r in rows], [r[f"{init}_ema_top1"] for r in rows], "--", c=color,
                    label=f"{init} (EMA)")
        ax.set(xlabel="epoch (0 = initial weights)", ylabel="Fashion-MNIST val top-1 (%)",
               title=f"{config.summary()}\n{config.meta['predicted_ms']} ms on iphone12", )
        ax.title.set_fontsize(8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()

    sup = supernet["history"]
    lines = [
        "# Train what the search found: inherited vs scratch (Fashion-MNIST)", "",
        "```", f"python experiments/train_emitted/run.py --supernet-epochs {args.supernet_epochs} --epochs {args.epochs} "
        f"--img-size {args.img_size} --target-ms {args.target_ms:g} --batch-size {args.batch_size}", "```", "",
        "Machine: 2 shared CPU cores (2 threads), CPU training, fp32. Fashion-MNIST: 60,000 training images, the "
        "10,000 official test images as validation; 28 px grey images upscaled to "
        f"{args.img_size} px, 3 channels.", "",
        f"**Supernet**: the shipped EfficientFormer space, {len(sup)} epochs, {supernet['recipe']['mixing']} Gumbel; "
        f"final supernet val top-1 {sup[-1]['val_acc']:.2f}%.", "",
        f"**Emitted config** (`nas slim --target-ms {args.target_ms:g} --device iphone12`, "
        f"{config.meta['steps']} steps): `{config.summary()}`, {config.meta['predicted_ms']} ms predicted, "
        f"{config.meta['inherited_top1']}% inherited top-1 on slim's 1,000-image validation subset.", "",
        f"**Training**: `nas train CONFIG --init inherited|scratch --epochs {args.epochs}`, the same recipe "
        "(AdamW lr 1e-3, wd 0.025, cosine with 1 warm-up epoch, label smoothing 0.1, EMA with warm-up), "
        "the same data order; top-1 on all 10,000 validation images.", "",
        "| epoch | inherited top-1 | inherited EMA | scratch top-1 | scratch EMA |", "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['epoch']} | {r['inherited_top1']:.2f} | {r['inherited_ema_top1']:.2f} | "
                     f"{r['scratch_top1']:.2f} | {r['scratch_ema_top1']:.2f} |")
    lines += ["", "The inherited model, exported and evaluated (`nas export model.pt --format all`, "
              "`nas eval model.pt --device iphone12`):", "", "```", exported.strip(), "```"]
    lines += ["", "Training time per epoch (s; from each run's metrics, so a resumed run counts once):", "",
              "| epoch | inherited | scratch |", "|---|---|---|"]
    for r in rows[1:]:
        lines.append(f"| {r['epoch']} | {r['inherited_seconds']:.0f} | {r['scratch_seconds']:.0f} |")
    for init in INITS:
        total = sum(h["seconds"] for h in histories[init])
        lines.append(f"\n{init}: {total:.0f} s of training in all.")
    lines += ["", "Wall time of the other steps (s): " + ", ".join(
        f"{k} {v:.0f}" for k, v in times.items() if not k.startswith("train "))]
    lines += ["", "Per-epoch data: `top1_per_epoch.csv`; plot: `top1_per_epoch.png`.", ""]
    (HERE / "result.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(run())
