"""Which ops XNNPACK does not take, for every published variant and every op kind (issue #31).

Each of the 30 published variants (1000 classes, its own resolution) is reparameterized,
exported with ``torch.export`` and lowered with XNNPACK's partitioner (``lut.pte.lower``, with its
rewrites of one-group and layer norms and EfficientFormer's attention bias gathered once,
``lut.pte.for_xnnpack``), as ``nas export --format pte`` does. The
ops left outside XNNPACK's partitions run as ExecuTorch's portable kernels: on a phone they are
where latency surprises live. Every program is also run by ``executorch.runtime`` against torch on
one random image (max |Δ| relative to max |torch|). Then one op of every kind of every family's
shipped spaces (the ops the latency tables time) is lowered the same way, to name the block each
fallback comes from.

    python experiments/executorch_delegation/run.py

Writes result.md and delegation.csv here.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

import search_spaces
from lut import graph, pte, store
from nas.core import io
from nas.export import deploy_model
from supernets import registry
from supernets.config import ArchConfig

HERE = Path(__file__).resolve().parent


def variant_rows() -> list[dict]:
    rows = []
    for fam in registry.searchable_families():
        for variant in search_spaces.variant_names(fam):
            cfg = ArchConfig.load(search_spaces.variant_path(fam, variant))
            model = deploy_model(cfg)
            x = torch.randn(1, 3, cfg.resolution, cfg.resolution, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                ref = model(x)
            edge = pte.lower(model, x, f"{fam} {variant}")
            method = pte.load(pte.program_bytes(edge), f"{fam} {variant}")
            out = method.execute([x])[0]
            diff = float((out - ref).abs().max() / ref.abs().max())
            left = pte.undelegated(edge)
            rows.append({"family": fam, "variant": variant, "resolution": cfg.resolution,
                         "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                         "undelegated": "; ".join(f"{op} x{n}" for op, n in sorted(left.items())) or "none",
                         "max_rel_diff": f"{diff:.1e}"})
            print(rows[-1], flush=True)
    return rows


def kind_rows() -> list[dict]:
    """One op of every kind (the first key met) of every family's shipped spaces."""
    rows = []
    for fam in registry.searchable_families():
        by_res = store.spaces_at([fam], None, None, "all")
        seen: set[str] = set()
        for spaces in by_res.values():
            for key, op in store.ops_of(spaces, 1000).items():
                if op.kind in seen:
                    continue
                seen.add(op.kind)
                x = torch.randn(op.in_shape, generator=torch.Generator().manual_seed(0))
                left = pte.undelegated(pte.lower(graph.deploy_module(op).eval(), x, f"op {key}"))
                rows.append({"family": fam, "kind": op.kind, "example_key": key,
                             "undelegated": "; ".join(f"{o} x{n}" for o, n in sorted(left.items())) or "none"})
                print(rows[-1], flush=True)
    return rows


def run(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    variants, kinds = variant_rows(), kind_rows()
    io.write_csv(HERE / "delegation.csv", variants)
    lines = [f"# What XNNPACK does not take ({datetime.date.today()}, ExecuTorch {pte.versions()['executorch']})", "",
             "    python experiments/executorch_delegation/run.py", "",
             "Ops outside XNNPACK's partitions run as ExecuTorch's portable kernels. Layout copies "
             "(`dim_order_ops._to_dim_order_copy`) at the program's edges are ExecuTorch's own.", "",
             "## The 30 published variants (1000 classes)", "",
             "| family | variant | px | params M | not delegated (portable kernels) | ExecuTorch vs torch, max rel Δ |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['family']} | {r['variant']} | {r['resolution']} | {r['params_m']} | {r['undelegated']} | "
              f"{r['max_rel_diff']} |" for r in variants]
    lines += ["", "## Per op kind of the shipped spaces (what the tables time)", "",
              "| family | kind | example op | not delegated |", "|---|---|---|---|"]
    lines += [f"| {r['family']} | {r['kind']} | `{r['example_key']}` | {r['undelegated']} |" for r in kinds]
    io.write_text(HERE / "result.md", "\n".join(lines) + "\n")
    print((HERE / "result.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run())
