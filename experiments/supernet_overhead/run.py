"""Training-step time of the supernet (soft and hard Gumbel, with and without width training)
relative to the largest single config of its space, in one process, same batch, interleaved
rounds (torch.utils.benchmark). Width training (the default) adds the FBNetV2 channel masks.

    python experiments/supernet_overhead/run.py [--space small|paper]
    python experiments/supernet_overhead/run.py --device cuda --amp bf16 --out result_cuda.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.utils.benchmark as benchmark

import search_spaces
from nas.engine import Runtime
from supernets.config import IDENTITY, Choice, SearchSpace
from supernets.supernet import Supernet

HERE = Path(__file__).resolve().parent


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, runtime: Runtime):
    model = runtime.prepare(model)
    x, y = runtime.batch(x, y)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with runtime.autocast():
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="efficientformer")
    ap.add_argument("--space", default="small", choices=["small", "paper"])
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | mps")
    ap.add_argument("--amp", default="off", help="off | bf16 | fp16")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--out", default="result.md", help="result file, in this folder")
    args = ap.parse_args(argv)
    runtime = Runtime.of(args.device, args.amp, args.channels_last)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    space = SearchSpace.load(search_spaces.space_path(args.family, args.space))
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    y = torch.randint(0, 10, (args.batch_size,))

    net = Supernet(space, num_classes=10, img_size=args.img_size).train()
    widths = tuple(s.max_width for s in space.stages)
    candidates = {}
    # every single config with all slots kept, one kind per stage: the slowest is "the largest"
    per_stage = [[k for k in s.choices if k != IDENTITY] for s in space.stages]
    import itertools
    for combo in itertools.product(*per_stage):
        choice = Choice(widths, tuple((k,) * s.slots for k, s in zip(combo, space.stages)))
        candidates["single " + "/".join(combo)] = net.subnet(choice).train()

    steps = {}
    for name, m in candidates.items():
        steps[name] = step_fn(m, x, y, runtime)
    for widths in (False, True):
        for mode in ("soft", "hard"):
            sup = Supernet(space, num_classes=10, img_size=args.img_size, train_widths=widths).train()
            sup.set_mixing(mode, 1.0)
            steps[f"supernet {mode}" + (" + widths" if widths else "")] = step_fn(sup, x, y, runtime)

    per_round = {n: [] for n in steps}
    for fn in steps.values():
        fn()
    for _ in range(args.rounds):
        for name, fn in steps.items():
            t = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=args.threads).blocked_autorange(min_run_time=1.0)
            per_round[name].append(t.median * 1e3)
    med = {n: statistics.median(v) for n, v in per_round.items()}
    singles = {n: v for n, v in med.items() if n.startswith("single")}
    largest = max(singles, key=singles.get)
    lines = [f"| {n} | {med[n]:.1f} | {min(per_round[n]):.1f}–{max(per_round[n]):.1f} | {med[n] / med[largest]:.2f}× |"
             for n in steps]
    summary = (f"with width training (the default): hard {med['supernet hard + widths'] / med[largest]:.2f}×, "
               f"soft {med['supernet soft + widths'] / med[largest]:.2f}×; without: hard "
               f"{med['supernet hard'] / med[largest]:.2f}×, soft {med['supernet soft'] / med[largest]:.2f}× "
               f"the largest single config ({largest}: {med[largest]:.1f} ms/step)")
    print(summary)
    with open(HERE / args.out, "w") as f:
        f.write("# Supernet training-step overhead\n\n")
        f.write(f"    python experiments/supernet_overhead/run.py {' '.join(argv if argv is not None else sys.argv[1:])}\n\n")
        where = (f"{args.threads} threads" if runtime.device.type == "cpu" else
                 f"{torch.cuda.get_device_name() if runtime.device.type == 'cuda' else runtime.device.type}")
        f.write(f"{args.family} {args.space} space, batch {args.batch_size} at {args.img_size} px, {where}, "
                f"amp {args.amp}{', channels-last' if args.channels_last else ''}, "
                f"forward+backward+AdamW step, median of {args.rounds} interleaved rounds "
                f"(`blocked_autorange`, ≥1 s each). Goal: hard ≤ 1.3×, soft ≤ 2.5×.\n\n")
        f.write(f"**{summary}**\n\n| model | ms/step (median) | min–max over rounds | vs largest single |\n|---|---|---|---|\n")
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
