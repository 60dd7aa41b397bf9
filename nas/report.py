"""``nas show``: what a config is and costs — exact params (train and deploy form), MACs,
predicted latency on every table that covers it, and its blocks; for a supernet checkpoint, what
its training learned: α per slot (with the paper's importance) and per α-searched stage knob."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from lut import graph
from lut.devices import SHIPPED_TABLES
from lut.table import LatencyTable, TableError
from supernets.config import ArchConfig
from supernets.layers import count_params, reparameterize
from supernets.registry import get_family


def _tables(tables_dir: Path, resolution: int, device: str | None) -> list[LatencyTable | str]:
    """The tables at `resolution` (the user's first, then the shipped ones); an unusable file is
    returned as the line saying why, not skipped in silence."""
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
            except TableError as e:
                out.append(f"unusable: {e}")
    return out


def costs(cfg: ArchConfig) -> dict[str, int]:
    """Parameters (train and deploy form) and MACs (deploy form) of `cfg` built at its deploy
    resolution, where its latency is priced. A trained model's own weights do not change these,
    but its resolution can: EfficientFormer's attention-bias tables grow with the token grid, so
    a model trained at 64 px has fewer parameters than the 224 px network it deploys as."""
    model = get_family(cfg.family).build(cfg).eval()
    deploy = reparameterize(model)
    macs = graph.macs(deploy, torch.zeros(1, 3, cfg.resolution, cfg.resolution))
    return {"params_train": count_params(model), "params_deploy": count_params(deploy), "macs": macs}


def show(config_path: str, tables_dir: Path, device: str | None = None) -> str:
    from lut.breakdown import swish_note

    cfg = ArchConfig.load(config_path)
    c = costs(cfg)
    lines = [f"{cfg.name or Path(config_path).stem}  ({cfg.family}, {cfg.resolution}x{cfg.resolution}, "
             f"{cfg.num_classes} classes)",
             f"  params   {c['params_train']:,} (train form)   {c['params_deploy']:,} (deploy form)",
             f"  MACs     {c['macs'] / 1e9:.3f} G (deploy form)"]
    tables = _tables(tables_dir, cfg.resolution, device)
    if not tables:
        lines.append(f"  latency  no table for resolution {cfg.resolution} (build one: nas lut build --device cpu)")
    for t in tables:
        if isinstance(t, str):
            lines.append(f"  latency  {t}")
            continue
        missing = t.missing(cfg)
        if missing:
            lines.append(f"  latency  {t.device:<9s} n/a: table lacks {len(missing)} op(s); {t.fill_hint(cfg.family)}")
        else:
            lines.append(f"  latency  {t.device:<9s} {t.predict(cfg):8.3f} ms predicted ({t.trust(cfg)}, {t.path})")
            note = swish_note(t, cfg)
            if note:
                lines.append(f"           {note}")
    lines.append("  blocks")
    for j, st in enumerate(cfg.stages):
        kinds = " ".join(str(b) for b in st.blocks) or "(none)"
        lines.append(f"    stage {j + 1}  width {st.width:<4d} depth {len(st.blocks):<2d} {kinds}")
    if cfg.meta:
        lines.append("  meta     " + ", ".join(f"{k}={v}" for k, v in cfg.meta.items()))
    return "\n".join(lines)


def branches_kept(split: dict[int, float]) -> list[float]:
    """P(high-frequency branch f_i is kept) = P(n >= i), i = 1..max n, from P(n)."""
    return [sum(q for n, q in split.items() if n >= i) for i in range(1, max(split) + 1)]


def show_supernet(path: str | Path) -> str:
    """The architecture distribution a trained supernet holds. Per stage, the probability of each
    width (a supernet trained with width α). For each slot: the probability of
    every choice and the importance (kept mass / identity mass, paper §4.2). For each α-searched
    knob (FMViT's ``hf_branches``): the probability of every value and, per high-frequency
    branch i, the probability that the split keeps it, P(n >= i)."""
    from nas import checkpoint, runs

    path = Path(path)
    ckpt = checkpoint.load(path / runs.SUPERNET if path.is_dir() else path)
    net = checkpoint.build_supernet(ckpt)
    history = ckpt.get("history") or [{}]
    lines = [f"{path}  ({net.space.family} supernet, {ckpt['epoch']} epochs, "
             f"val {history[-1].get('val_acc', float('nan')):.1f}% with mixed paths)"]
    importance = net.slot_importance()
    widths = net.width_probabilities()
    for j, (probs, knobs) in enumerate(zip(net.probabilities(), net.knob_probabilities())):
        lines.append(f"  stage {j + 1}")
        if widths[j]:
            lines.append("    width  " + "  ".join(f"{w}: {p:.3f}" for w, p in widths[j].items()))
        for i, p in enumerate(probs):
            dist = "  ".join(f"{k} {v:.3f}" for k, v in p.items())
            lines.append(f"    slot {i + 1}  {dist}   importance {importance[j][i]:.3f}")
        for name, p in knobs.items():
            lines.append(f"    {name}  " + "  ".join(f"{v}: {q:.3f}" for v, q in p.items()))
            if name == "hf_branches":
                keep = branches_kept(p)
                lines.append("    branch kept  " + "  ".join(f"f{i}: {k:.3f}" for i, k in enumerate(keep, 1)))
    return "\n".join(lines)


def reachable_range(supernet: str | os.PathLike, device: str, tables_dir: str | os.PathLike,
                    progress: bool = True) -> str:
    """The latency range slimming can reach from a supernet (a run folder or its checkpoint) on a
    device's table: the start (every stage at its widest, every slot kept) and the floor (the
    actions' smallest reach)."""
    from lut import store
    from nas import checkpoint, runs
    from nas.slim import reachable_floor

    supernet = Path(supernet)
    net = checkpoint.build_supernet(checkpoint.load(supernet / runs.SUPERNET if supernet.is_dir() else supernet))
    _, predict = store.open_predictor(device, net.space.resolution, tables_dir, progress)
    start = net.initial_choice()
    start_config = start.to_config(net.space, num_classes=net.num_classes)
    return (f"  reachable on {device}@{net.space.resolution}: {reachable_floor(net, predict, start):.3f} ms "
            f"(floor) to {predict(start_config):.3f} ms (start: {start_config.summary()})")


def show_breakdown(config_paths: list[str], tables_dir: Path, device: str, png: str | os.PathLike | None = None,
                   progress: bool = True) -> tuple[str, Path]:
    """Where the milliseconds of each config go on `device`, per stage and per kind of op
    (``lut.breakdown``), side by side, as text and as a PNG (default: next to the first config,
    ``NAME.DEVICE.breakdown.png``). Ops the table lacks are measured or estimated as for slim."""
    from lut import breakdown, estimate, store
    from nas.core.errors import UserError

    configs = [ArchConfig.load(p) for p in config_paths]
    if len({c.resolution for c in configs}) > 1:
        raise UserError(f"--compare: the configs deploy at {sorted({c.resolution for c in configs})} px; a breakdown "
                        "compares them on one table (re-emit one at the other's resolution)")
    table, predict = store.open_predictor(device, configs[0].resolution, tables_dir, progress)
    model = estimate.CostModel.load(estimate.cost_model_path(tables_dir))
    rows = []
    for path, cfg in zip(config_paths, configs):
        predict(cfg)   # fills the ops the table lacks
        rows.append(breakdown.breakdown(table, cfg, model.weights, cfg.name or Path(path).stem))
    out = Path(png) if png else Path(config_paths[0]).with_suffix(f".{device}.breakdown.png")
    breakdown.draw(rows, f"{device}@{configs[0].resolution}", out)
    how = ("the Core ML cost model's estimate" if table.environment.get("backend") == "coreml" else
           "the table's measured op times, split within each block by the Core ML cost model's relative costs")
    notes = ""
    for row, cfg in zip(rows, configs):   # on an estimated table: what its Swish may cost instead
        note = breakdown.swish_note(table, cfg)
        notes += f"  {row.label}: {note}\n" if note else ""
    return (breakdown.render(rows, f"{device}@{configs[0].resolution}") + f"\n  ({how}; "
            f"{store.provenance(table)['table']})\n{notes}"
            f"  wrote {out}"), out
