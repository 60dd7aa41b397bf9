"""Step time of ``nas train`` against a plain timm training loop, interleaved in one process.

Both train the same model (the same initial weights, copied) on the same batches with the same
threads, timm optimizer (AdamW), loss (label smoothing) and EMA (ModelEmaV3 with warm-up):

* **nas**: ``nas.engine.train_epoch`` with ``nas.train_model.Loss``, exactly what ``nas train``
  runs per epoch (device-side metric accumulation, a host read every 50 steps, EMA after the step);
* **timm loop**: the body of timm's ``train.py`` ``train_one_epoch`` without its logging:
  forward, loss, ``zero_grad``, ``backward``, ``step``, EMA update.

Rounds alternate which loop goes first; each round times ``--steps`` steps of each after one
warm-up step. Reported: median of the per-round ratios nas / timm, with min-max. Goal <= 1.05.

    python experiments/train_speed/run.py --rounds 7 --steps 10
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def run(argv=None) -> int:
    import timm
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3

    from nas import engine
    from nas.train_model import Loss, TrainRecipe
    from supernets.registry import family_names, get_family

    for family in family_names():   # registers the nas_* models with timm
        get_family(family)

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="nas_efficientformer_l1")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="off")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    runtime = engine.Runtime.of(args.device, args.amp, args.channels_last)
    torch.manual_seed(0)
    base = timm.create_model(args.model, num_classes=10, img_size=args.img_size)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g),
                torch.randint(0, 10, (args.batch_size,), generator=g)) for _ in range(args.steps + 1)]

    def setup():
        model = runtime.prepare(copy.deepcopy(base)).train()
        opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.025)
        return model, opt, ModelEmaV3(model, decay=0.9998, use_warmup=True)

    nas_model, nas_opt, nas_ema = setup()
    loss_fn = Loss(TrainRecipe(), 10, None, False)
    nas_step = [0]

    def nas_update():
        nas_step[0] += 1
        nas_ema.update(nas_model, step=nas_step[0])

    def run_nas(bs):
        engine.train_epoch(nas_model, bs, nas_opt, lambda x, y: loss_fn(nas_model, x, y), runtime, desc="nas",
                           progress=False, after_update=nas_update)

    timm_model, timm_opt, timm_ema = setup()
    criterion = LabelSmoothingCrossEntropy(0.1)
    timm_step = [0]

    def run_timm(bs):
        for x, y in bs:
            x, y = runtime.batch(x, y)
            with runtime.autocast():
                loss = criterion(timm_model(x), y)
            timm_opt.zero_grad()
            loss.backward()
            timm_opt.step()
            timm_step[0] += 1
            timm_ema.update(timm_model, step=timm_step[0])
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        fn(batches[:1])   # warm-up
        t0 = time.perf_counter()
        fn(batches[1:])
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.steps

    ratios, nas_ms, timm_ms = [], [], []
    for r in range(args.rounds):
        order = [("nas", run_nas), ("timm", run_timm)] if r % 2 == 0 else [("timm", run_timm), ("nas", run_nas)]
        t = {name: timed(fn) for name, fn in order}
        ratios.append(t["nas"] / t["timm"])
        nas_ms.append(1e3 * t["nas"])
        timm_ms.append(1e3 * t["timm"])
        print(f"round {r + 1}: nas {nas_ms[-1]:.1f} ms/step, timm {timm_ms[-1]:.1f} ms/step, ratio {ratios[-1]:.3f}",
              flush=True)
    med = statistics.median(ratios)
    summary = (f"{args.model} @ {args.img_size} px, batch {args.batch_size}, {args.threads} thread(s), "
               f"{runtime.device.type}, amp {args.amp}{', channels-last' if args.channels_last else ''}: "
               f"nas {statistics.median(nas_ms):.1f} ms/step, timm loop {statistics.median(timm_ms):.1f} ms/step; "
               f"ratio median {med:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}) over {args.rounds} rounds "
               f"of {args.steps} steps")
    print(summary)
    return 0 if med <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(run())
