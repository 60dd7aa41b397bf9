"""Ray Train on this machine: 2 DDP workers vs 1 (and plain single-process training), same recipe.

A 2-node Ray cluster on 127.0.0.1 (one CPU per node, as on a laptop-sized loopback cluster);
each run trains the family's supernet on the embedded digits for --epochs epochs. Reports the
wall time of the command (Ray start-up included), the mean epoch time from the checkpoint's
history, and the time outside the epochs (start-up, checkpoint reporting).

    python experiments/ray_train/run.py --epochs 2
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

from nas import checkpoint
from nas.cluster import RAY_ENV
from nas.train import supernet_recipe, train_supernet_run

HERE = Path(__file__).resolve().parent


def run(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="efficientformer")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args(argv)
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    from ray.cluster_utils import Cluster

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        recipe = supernet_recipe(family=args.family, epochs=args.epochs)

        def train(name: str, **ray) -> None:   # `nas train-supernet` as a library call
            train_supernet_run(recipe, Path(tmp) / name, progress=False, log=lambda line: None, **ray)

        t0 = time.time()
        train("single")
        rows.append(("single process (2 threads)", time.time() - t0, Path(tmp) / "single"))
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 200 * 2**20,
                                                                  "node_ip_address": "127.0.0.1"})
        cluster.add_node(num_cpus=1, object_store_memory=200 * 2**20, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        try:
            for workers in (1, 2):
                t0 = time.time()
                train(f"ray{workers}", ray_address=cluster.address, workers=workers)
                rows.append((f"Ray Train, {workers} worker(s) ({2 // workers} thread(s) each)", time.time() - t0,
                             Path(tmp) / f"ray{workers}"))
        finally:
            cluster.shutdown()
        table = []
        for label, wall, run_dir in rows:
            hist = checkpoint.load(run_dir / "supernet.pt")["history"]
            epoch_s = sum(h["seconds"] for h in hist) / len(hist)
            table.append((label, wall, epoch_s, wall - epoch_s * len(hist), hist[-1]["val_acc"]))
    lines = [f"# Ray Train vs single process ({args.family}, embedded digits, {datetime.date.today()})", "",
             f"    python experiments/ray_train/run.py --epochs {args.epochs}", "",
             "2 shared CPU cores; the Ray cluster is 2 nodes on 127.0.0.1 with 1 CPU each; the global batch is the "
             "recipe's (each DDP worker takes batch/workers).", "",
             "| run | wall s | mean epoch s | outside epochs s | final val top-1 % |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {wall:.0f} | {ep:.1f} | {rest:.0f} | {acc:.1f} |" for label, wall, ep, rest, acc in table]
    (HERE / "result.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run())
