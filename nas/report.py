"""``nas show``: what a config is and costs — exact params (train and deploy form), MACs,
predicted latency on every table that covers it, and its blocks."""
from __future__ import annotations

from pathlib import Path

import torch

from lut import graph
from lut.devices import SHIPPED_TABLES
from lut.table import LatencyTable, TableError
from supernets.config import ArchConfig
from supernets.layers import count_params, reparameterize
from supernets.registry import get_family


def _tables(tables_dir: Path, resolution: int, device: str | None) -> list[LatencyTable]:
    seen, out = set(), []
    for root in (tables_dir, SHIPPED_TABLES):
        for p in sorted(Path(root).glob("*@*.yaml")):
            name = p.stem
            dev, res = name.rsplit("@", 1)
            if name in seen or (device and dev != device) or res != str(resolution):
                continue
            try:
                out.append(LatencyTable.load(p))
                seen.add(name)
            except TableError:
                continue
    return out


def show(config_path: str, tables_dir: Path, device: str | None = None) -> str:
    cfg = ArchConfig.load(config_path)
    model = get_family(cfg.family).build(cfg).eval()
    deploy = reparameterize(model)
    macs = graph.macs(deploy, torch.zeros(1, 3, cfg.resolution, cfg.resolution))
    lines = [f"{cfg.name or Path(config_path).stem}  ({cfg.family}, {cfg.resolution}x{cfg.resolution}, "
             f"{cfg.num_classes} classes)",
             f"  params   {count_params(model):,} (train form)   {count_params(deploy):,} (deploy form)",
             f"  MACs     {macs / 1e9:.3f} G (deploy form)"]
    tables = _tables(tables_dir, cfg.resolution, device)
    if not tables:
        lines.append(f"  latency  no table for resolution {cfg.resolution} (build one: nas lut build --device cpu)")
    for t in tables:
        missing = t.missing(cfg)
        if missing:
            lines.append(f"  latency  {t.device:<9s} n/a: table lacks {len(missing)} op(s); {t.fill_hint(cfg.family)}")
        else:
            sources = {t.entries[k].get("source", "?") for k in graph.keys(cfg)}
            lines.append(f"  latency  {t.device:<9s} {t.predict(cfg):8.3f} ms predicted ({'/'.join(sorted(sources))}, {t.path})")
    lines.append("  blocks")
    for j, st in enumerate(cfg.stages):
        kinds = " ".join(str(b) for b in st.blocks) or "(none)"
        lines.append(f"    stage {j + 1}  width {st.width:<4d} depth {len(st.blocks):<2d} {kinds}")
    if cfg.meta:
        lines.append("  meta     " + ", ".join(f"{k}={v}" for k, v in cfg.meta.items()))
    return "\n".join(lines)
