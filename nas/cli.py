"""The ``nas`` command line.

Every error a user can cause prints one line (``nas: error: ...``) saying what is wrong and how
to fix it, exits 2, and leaves no partial file behind (all writes are atomic).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from nas.errors import ParameterError, UserError
from nas.runs import DEFAULT_FAMILY

DEFAULT_RUNS = "runs"
# library parameters whose flag is not ``--`` + the name with dashes
FLAG_OF_PARAMETER = {"study_name": "--study"}


# ---------------------------------------------------------------------------- helpers
def _tables_dir(args) -> Path:
    return Path(args.tables) if args.tables else Path(args.runs) / "tables"


def _families(name: str) -> list[str]:
    from supernets.registry import family_names, get_family

    if name == "all":  # every family with a searchable space (a family may ship variants first)
        import search_spaces

        return [f for f in family_names() if search_spaces.space_path(f).is_file()]
    get_family(name)
    return [name]


# ---------------------------------------------------------------------------- commands
def cmd_train_supernet(args) -> Path:
    from nas import checkpoint, runs
    from nas.train import Recipe, train_supernet_run

    if args.family == "all" and not args.resume:
        return _train_every_family(args)

    runtime_flags = {"device": args.device, "channels_last": args.channels_last, "threads": args.threads}
    if args.resume:
        run_dir = Path(args.resume)
        ckpt = checkpoint.load(run_dir / runs.SUPERNET)
        _refuse_recipe_changes(args, ckpt["recipe"], "train-supernet", {
            "family": "family", "space": "space", "data": "data", "img_size": "img_size", "batch_size": "batch_size",
            "lr": "lr", "arch_lr": "arch_lr", "mixing": "mixing", "tau_max": "tau_max", "tau_min": "tau_min",
            "seed": "seed", "amp": "amp", "train_widths": "train_widths"})
        recipe = Recipe.from_dict({**ckpt["recipe"], **runtime_flags})
        if args.epochs is not None:
            recipe.epochs = args.epochs
    else:
        args.family = args.family or _family_of_space(args.space)
        img_size = args.img_size or _default_img_size(args.data, lambda: _space_of(args).resolution)
        recipe = Recipe(family=args.family, space=args.space, data=args.data, img_size=img_size,
                        epochs=args.epochs if args.epochs is not None else Recipe.epochs,
                        batch_size=args.batch_size, lr=args.lr, arch_lr=args.arch_lr, mixing=args.mixing,
                        tau_max=args.tau_max, tau_min=args.tau_min, seed=args.seed, amp=args.amp,
                        train_widths=args.train_widths, **runtime_flags)
        recipe.check()
        run_dir = runs.new_run_dir(args.runs, recipe.family, args.name)
    path = train_supernet_run(recipe, run_dir, resume=bool(args.resume), workers=args.workers,
                              ray_address=args.ray_address, gpus_per_worker=args.gpus_per_worker,
                              storage_path=args.storage_path, progress=not args.no_progress,
                              log=lambda line: print(line, flush=True))
    print(f"supernet: {path}")
    return path


def _refuse_recipe_changes(args, recorded: dict, command: str, flags: dict[str, str]) -> None:
    """--resume continues the recorded recipe: a recipe flag given with another value than the
    run's is an error, never silently ignored (flags left at their defaults are not "given")."""
    defaults = vars(_parse([command]))
    for attr, field in flags.items():
        value = getattr(args, attr)
        if value != defaults[attr] and value != recorded.get(field):
            flag = "--" + attr.replace("_", "-")
            raise UserError(f"--resume continues the run's recipe: {flag} {value} differs from its "
                            f"{recorded.get(field)}; drop {flag}, or start a new run (--name / --out)")


def _default_img_size(data: str, deploy_resolution) -> int:
    """64 px for the small grey in-memory sets (digits, Fashion-MNIST); an image folder trains at
    the deploy resolution its latency is priced at (`deploy_resolution()`)."""
    from nas import data as data_mod

    return 64 if data_mod.in_memory_source(data) else deploy_resolution()


def _family_of_space(space: str) -> str:
    """The family a --space names: a YAML file's own, the default family's for small/paper."""
    from supernets.config import SearchSpace

    return DEFAULT_FAMILY if space in ("small", "paper") else SearchSpace.load(space).family


def _space_of(args):
    from supernets.config import SearchSpace
    from supernets.registry import get_family
    import search_spaces

    get_family(args.family)
    return SearchSpace.load(search_spaces.resolve(args.family, args.space))


def _train_every_family(args) -> Path:
    """Each family's supernet in turn, as RUNS/NAME-FAMILY. The same command (same --name) again
    skips finished families and resumes the one a crash interrupted."""
    import datetime

    from nas import runs

    import search_spaces

    if args.space not in search_spaces.SPACES:
        raise UserError(f"--family all trains a shipped space of every family (--space "
                        f"{'|'.join(search_spaces.SPACES)}); --space {args.space} names one file, give one --family")
    name = args.name or f"all-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    print(f"training every family's supernet as {args.runs}/{name}-FAMILY (re-run with --name {name} to resume)",
          flush=True)
    path = None
    for family in _families("all"):
        run_dir = Path(args.runs) / f"{name}-{family}"
        if runs.read_info(run_dir).get("complete"):
            print(f"{family}: done already ({run_dir / runs.SUPERNET})")
            path = run_dir / runs.SUPERNET
            continue
        resume = str(run_dir) if (run_dir / runs.SUPERNET).is_file() else None
        path = cmd_train_supernet(argparse.Namespace(**{**vars(args), "family": family, "name": run_dir.name,
                                                        "resume": resume}))
    return path


def cmd_lut_build(args) -> Path:
    from lut import store

    return store.build_tables(args.device, _families(args.family), space=args.space, resolution=args.resolution,
                              num_classes=args.num_classes, tables_dir=_tables_dir(args), rounds=args.rounds,
                              calibration_samples=args.calibration_samples, recalibrate=args.recalibrate,
                              progress=not args.no_progress)[-1]


def cmd_lut_devices(args) -> None:
    from collections import Counter

    from lut import store
    from lut.devices import SHIPPED_TABLES, all_devices, tables_of
    from lut.table import LatencyTable, TableError
    from supernets.registry import family_names

    tables_dir = _tables_dir(args)

    def coverage(table: LatencyTable) -> str:
        counts = store.coverage(table, family_names(), args.space, args.num_classes)
        return ", ".join(f"{fam} {have}/{need}" for fam, (have, need) in counts.items() if have) or "no family's space"

    for d in all_devices(tables_dir).values():
        where = "built-in" if d.builtin else f"user ({tables_dir / 'devices.yaml'})"
        res = f", {d.resolution} px" if d.resolution else ""
        print(f"{d.name}  [{d.backend}, {d.threads} thread(s){res}, {where}]  {d.description}")
        print(f"  {'measurable here' if d.measurable else 'not measurable here: ' + d.unavailable_reason}")
        tables = tables_of(d.name, tables_dir)
        if not tables:
            print("  no table yet")
        for p in tables:
            origin = "shipped" if p.parent.resolve() == SHIPPED_TABLES.resolve() else "user"
            try:
                t = LatencyTable.load(p)
            except TableError as e:
                print(f"  {p} ({origin}): unusable: {e}")
                continue
            sources = Counter(str(e.get("source", "?")) for e in t.entries.values())
            kinds = ", ".join(f"{n} {s}" for s, n in sorted(sources.items()))
            print(f"  {p} ({origin}, {t.resolution} px, {len(t.entries)} ops: {kinds}); covers {coverage(t)}")


def cmd_lut_export(args) -> Path:
    import importlib

    from tqdm.auto import tqdm

    from lut import store
    from lut.devices import get_device

    tables_dir = _tables_dir(args)
    device = get_device(args.device, tables_dir)
    if device.exporter is None:
        raise UserError(f"device {args.device} is measured here ({device.backend}); use `nas lut build --device "
                        f"{args.device}` (lut export is for devices timed elsewhere, such as Core ML's)")
    exporter = importlib.import_module(device.exporter)
    by_res = store.spaces_at(_families(args.family), args.resolution, device, args.space)
    if len(by_res) > 1:
        raise UserError(f"the spaces of --family {args.family} deploy at {sorted(by_res)} px; pick one with --resolution")
    (res, spaces), = by_res.items()
    ops = store.ops_of(spaces, args.num_classes)
    todo = store.not_measured(device, res, tables_dir, ops)
    out = Path(args.out) if args.out else Path(args.runs) / "apple" / f"{args.device}@{res}"
    print(f"{args.device}@{res}: {len(ops)} ops in the space, {len(ops) - len(todo)} already measured, "
          f"exporting {len(todo)} {exporter.EXPORTS} to {out}", flush=True)
    bar = tqdm(total=len(todo), desc="converting", unit="op", disable=args.no_progress, leave=False)
    try:
        result = exporter.export_ops(todo, out, args.device, res, progress=bar.update)
    except Exception as e:  # noqa: BLE001 - torch.export/coremltools raise many types
        raise UserError(f"{device.backend} conversion failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                        "packages written so far are kept, re-run to continue") from None
    finally:
        bar.close()
    print(f"wrote {result.written} {exporter.EXPORTS} ({result.skipped} already there) and {result.manifest}")
    print(f"time them on the device ({exporter.how_to_time(out)}), then: "
          f"nas lut import {out / 'timings.csv'} --device {args.device}")
    return result.manifest


def cmd_lut_import(args) -> Path:
    from lut import apple, store
    from lut.devices import get_device
    from supernets.registry import family_names

    tables_dir = _tables_dir(args)
    device = get_device(args.device, tables_dir)
    by_res = store.spaces_at(family_names(), args.resolution, device, args.space)
    if len(by_res) > 1:
        raise UserError(f"the families' spaces deploy at {sorted(by_res)} px; say which table with --resolution")
    (res, spaces), = by_res.items()
    known = set(store.ops_of(spaces, args.num_classes))
    try:
        timings = apple.read_timings(Path(args.timings), known)
    except apple.TimingsError as e:
        raise UserError(str(e)) from None
    table = store.user_copy(device, res, tables_dir)
    n = apple.import_timings(table, timings, Path(args.timings).name)
    table.save()
    print(f"imported {n} timings into {table.path} ({len(table.entries)} entries)")
    return table.path


def _cost_model(args):
    """The Core ML cost model (``--refit``: profiled and fitted anew on the published latencies,
    saved to the tables directory) and the estimate protocol of ``--device``."""
    from lut import store
    from lut.devices import get_device

    tables_dir = _tables_dir(args)
    device = get_device(args.device, tables_dir)
    source = store.estimate_protocol(device)
    if not getattr(args, "refit", False):
        return store.cost_model(device, tables_dir)
    model, path = store.refit_cost_model(tables_dir, progress=not args.no_progress)
    print(f"fitted {model.version} on {model.fitted_on['rows']} published latencies of "
          f"{model.fitted_on['models']} models (in-sample median error "
          f"{model.fitted_on['in_sample_median_ape_pct']}%); saved {path}", flush=True)
    return model, source


def cmd_lut_estimate(args) -> list[Path]:
    from tqdm.auto import tqdm

    from lut import estimate, store
    from lut.devices import get_device

    model, source = _cost_model(args)
    tables_dir = _tables_dir(args)
    device = get_device(args.device, tables_dir)
    families = _families(args.family)
    written = []
    for res in args.resolution:
        (_, spaces), = store.spaces_at(families, res, device, args.space).items()
        ops: dict[str, dict] = {}
        for n in args.num_classes:
            ops.update(store.ops_of(spaces, n))
        ops.update(store.variant_ops(families, res))   # so published variants can be priced next to searched ones
        table = store.user_copy(device, res, tables_dir)
        bar = tqdm(total=len(ops), desc=f"{args.device}@{res}", unit="op", disable=args.no_progress, leave=False)
        try:
            added = estimate.estimate_ops(table, ops, model, source, progress=bar.update, redo=not args.only_missing)
        finally:
            bar.close()
        estimate.describe_table(table, model, source)
        written.append(table.save())
        print(f"{table.path}: {added} ops estimated ({len(ops)} in the spaces of {', '.join(families)}; "
              f"{len(table.entries)} entries), {model.version} as {source}, call overhead {table.overhead_ms:.3f} ms")
    return written


def cmd_lut_estimate_model(args) -> float:
    from lut import estimate

    model, source = _cost_model(args)
    try:
        feats, res = estimate.model_features(args.timm, args.resolution)
    except RuntimeError as e:
        raise UserError(f"--timm {args.timm}: {str(e).splitlines()[0]} (list names with timm.list_models())") from None
    ms = model.network_ms(feats, source)
    print(f"{args.timm} @ {res} px on {args.device}: {ms:.3f} ms estimated ({model.version}, as {source})")
    parts = sorted(((model.scales[source] * model.weights[k] * feats[k], k) for k in estimate.FEATURES), reverse=True)
    print("  " + ", ".join(f"{k} {v:.3f}" for v, k in parts if v > 0) + f", call overhead {model.overheads[source]:.3f}")
    return ms


def cmd_lut_validate(args) -> list[Path]:
    from lut import build, store, validate
    from lut.build import Predictor
    from lut.devices import get_device
    from supernets.config import SearchSpace
    import search_spaces

    if args.samples < 2:
        raise UserError(f"--samples {args.samples}: need at least 2 configs to report an error distribution")
    written = []
    for fam in _families(args.family):
        space = SearchSpace.load(search_spaces.space_path(fam, args.space))
        device = get_device(args.device, _tables_dir(args))
        space = space.replace(resolution=args.resolution or device.resolution or space.resolution)
        device, table = store.open_table(args.device, space.resolution, _tables_dir(args), create=False)
        if not device.measurable:
            raise UserError(f"device {args.device} cannot be measured on this machine, so its table cannot be "
                            "validated here")
        predictor = Predictor(table, True, threads=device.threads, progress=not args.no_progress)
        print(f"validating {table.path} on {args.samples} random {fam} configs", flush=True)
        result = validate.validate(table, space, args.num_classes, samples=args.samples, seed=args.seed,
                                   threads=device.threads, rounds=args.rounds, predictor=predictor,
                                   progress=not args.no_progress)
        out = Path(args.out) if args.out else Path(args.runs) / "validate" / f"{args.device}@{space.resolution}-{fam}"
        title = f"{fam} @ {args.device}{space.resolution}, {device.threads} thread(s)"
        written += validate.write(result, out, title)
        print(f"{fam}: {result.summary()}")
        warning = build.noisy_calibration_warning(table)
        if warning:
            print(warning)
        print(f"  wrote {out / 'validation.csv'} and {out / 'scatter.png'}")
    return written


def _session(args):
    """The supernet, table, predictor and evaluator that slim and search share (``nas.session``)."""
    from nas.session import SupernetSession
    from nas.slim import checked_targets

    checked_targets(args.target_ms)   # a bad target is refused before anything loads
    return SupernetSession.open(
        supernet=args.supernet, runs_dir=args.runs, family=args.family, device=args.device,
        tables_dir=_tables_dir(args), threads=args.threads, calib_images=args.calib_images,
        val_images=args.val_images, seed=args.seed, channel_order_rule=args.channel_order,
        progress=not args.no_progress)


def cmd_slim(args) -> Path:
    from supernets import io

    with io.all_or_nothing():   # configs, weights, trajectory and plot stand or fall together
        if args.family == "all":
            return _slim_every_family(args)
        return _slim_one(args).configs[-1]


def _slim_one(args):
    """Slim one family's supernet (printing what it wrote); returns the `Emitted`."""
    from nas import cluster
    from nas.slim import checked_targets

    session = _session(args)
    targets = checked_targets(args.target_ms)
    print(f"slimming {session.family} supernet {session.ckpt_path} for {args.device}@{session.net.space.resolution} "
          f"to {', '.join(f'{t:g}' for t in targets)} ms", flush=True)
    with cluster.connected(args.ray_address) as on_ray:
        evaluate_map = cluster.evaluate_map(session.net, session.evaluator, args.threads) if on_ray else map
        emitted = session.slim(targets, Path(args.out) if args.out else session.ckpt_path.parent / "slim",
                               proposals=args.proposals, last_step=args.last_step, evaluate_map=evaluate_map)
    _print_emitted(emitted, targets)
    return emitted


def _print_emitted(emitted, targets: list[float]) -> None:
    start = emitted.result.steps[0]
    for t, yaml_path, weights in zip(targets, emitted.configs, emitted.weights):
        _, step = emitted.result.at(t)
        if step.step == 0:
            print(f"note: {t:g} ms is at or above the supernet's start ({start.latency_ms:.3f} ms, every stage at its "
                  f"widest with every slot kept): no slimming was needed, the start is emitted; a larger space or "
                  f"a smaller target slims")
        print(f"config: {yaml_path}  ({step.latency_ms:.3f} ms predicted, {step.accuracy:.2f}% inherited top-1, "
              f"step {step.step})")
        print(f"inherited weights: {weights}  (train them: nas train {yaml_path} --init inherited)")
    print(f"trajectory: {emitted.trajectory[0]}  plot: {emitted.trajectory[1]}")


def _slim_every_family(args) -> Path:
    """``--family all``: every family's newest supernet to the same target(s), in one folder."""
    from nas.session import slim_every_family, targets_label
    from nas.slim import checked_targets

    if args.supernet:
        raise UserError("--family all slims each family's newest supernet under --runs; --supernet names one, "
                        "give its --family")
    targets = checked_targets(args.target_ms)
    out_dir = Path(args.out) if args.out else Path(args.runs) / "families" / f"{args.device}-{targets_label(targets)}"

    def slim_one(family: str, ckpt: Path):
        return _slim_one(argparse.Namespace(**{**vars(args), "family": family, "supernet": str(ckpt),
                                               "out": str(out_dir)}))

    rows, csv_path, png_path = slim_every_family(_families("all"), targets, out_dir, runs_dir=args.runs,
                                                 slim_one=slim_one, device=args.device,
                                                 log=lambda line: print(line, flush=True))
    print(f"\n{'family':<16s} {'target':>7s} {'ms':>8s} {'top-1':>7s} {'params M':>9s} {'MACs G':>7s} {'steps':>5s}  status")
    for r in rows:
        print(f"{r['family']:<16s} {r['target_ms']:>7g} {str(r['predicted_ms']):>8s} {str(r['inherited_top1']):>7s} "
              f"{str(r['params_m']):>9s} {str(r['macs_g']):>7s} {str(r['steps']):>5s}  {r['status']}"
              + (f" ({r['floor_ms']} ms)" if r["floor_ms"] != "" else ""))
    print(f"table: {csv_path}  plot: {png_path}")
    return csv_path


def cmd_search(args) -> Path:
    from nas.slim import checked_targets

    targets = checked_targets(args.target_ms)
    found = _session(args).search(
        targets, args.out, trials=args.trials, storage=args.storage, study_name=args.study, seed=args.seed,
        population=args.population, ray_address=args.ray_address, workers=args.workers, threads=args.threads,
        progress=not args.no_progress, log=lambda line: print(line, flush=True))
    result, out_dir, budget = found.result, found.out_dir, targets[0]
    n = len(result.study.trials)
    if result.best is None:
        print(f"{n} trials, none within {budget:g} ms; trials: {out_dir / 'trials.csv'}")
    else:
        b = result.best
        print(f"{n} trials; Pareto front within {budget:g} ms: {len(result.front)} configs in "
              f"{out_dir / 'pareto'}; best: trial {b.number}, {b.values[0]:.2f}% inherited top-1 at {b.values[1]:.3f} ms")
    for row in found.best_per_target:
        print(f"  {row['target_ms']:g} ms: " + (f"trial {row['trial']}, {row['inherited_top1']:.2f}% at "
                                                f"{row['predicted_ms']:.3f} ms" if row["config"] else
                                                "no member of the front is this fast"))
    print(f"trials: {out_dir / 'trials.csv'}  plot: {out_dir / 'pareto.png'}")
    return found.written[-1]


def cmd_show(args) -> None:
    from nas.report import show, show_supernet

    target = Path(args.config)
    if target.is_dir() or target.suffix == ".pt":
        print(show_supernet(target))
        if args.device:
            print(_reachable_range(target, args))
    else:
        print(show(args.config, _tables_dir(args), args.device))


def _reachable_range(target: Path, args) -> str:
    """The latency range slimming can reach from a supernet on a device's table: the start (every
    stage at its widest, every slot kept) and the floor (the actions' smallest reach)."""
    from lut import store
    from nas import checkpoint, runs
    from nas.slim import reachable_floor

    net = checkpoint.build_supernet(checkpoint.load(target / runs.SUPERNET if target.is_dir() else target))
    _, predict = store.open_predictor(args.device, net.space.resolution, _tables_dir(args), not args.no_progress)
    start = net.initial_choice()
    start_config = start.to_config(net.space, num_classes=net.num_classes)
    return (f"  reachable on {args.device}@{net.space.resolution}: {reachable_floor(net, predict, start):.3f} ms "
            f"(floor) to {predict(start_config):.3f} ms (start: {start_config.summary()})")


def cmd_export(args) -> list:
    from nas import export
    from supernets.config import ArchConfig

    if args.resolution is not None and (args.resolution <= 0 or args.resolution % 32):
        raise UserError(f"--resolution {args.resolution}: must be a positive multiple of 32")
    formats = list(export.FORMATS) if args.format == "all" else [args.format]
    source = Path(args.config)
    stem = Path(args.out) if args.out else source.with_suffix("")
    if args.out is None and args.resolution:
        stem = stem.with_name(f"{stem.name}@{args.resolution}")
    if source.suffix == ".pt":
        done = _export_trained(source, formats, stem, args)
    else:
        cfg = ArchConfig.load(args.config)
        if args.resolution:
            cfg = cfg.replace(resolution=args.resolution)
        done = export.export(cfg, formats, stem, weights=args.weights)
    for e in done:
        check = (f"onnxruntime max relative diff {e.max_rel_diff:.1e}" if e.max_rel_diff is not None
                 else "converted and saved (Core ML runs on macOS only)")
        if e.top1 is not None:
            check += f"; top-1 on the validation subset: torch {e.top1[0]:.2f}%, onnxruntime {e.top1[1]:.2f}%"
        print(f"{e.format}: {e.path}  ({check})")
    return done


def _export_trained(path: Path, formats: list[str], stem: Path, args) -> list:
    """A model checkpoint (``nas train``'s model.pt, or inherited weights from slim): its EMA
    weights unless --no-ema, reparameterized, exported at the resolution it was trained at (or
    --resolution where the weights allow), ONNX checked on the validation subset of its data."""
    from nas import checkpoint, data as data_mod, export
    from nas.train_model import load_trained, trained_data
    from supernets.layers import reparameterize

    ckpt = checkpoint.load(path, (checkpoint.MODEL_FORMAT,))
    resolution = args.resolution or ckpt["img_size"]
    model, config, ckpt, use_ema = load_trained(path, ema=not args.no_ema, img_size=resolution)
    if resolution != config.resolution:
        print(f"note: exporting at {resolution} px (trained there); its latency was priced at the config's "
              f"{config.resolution} px: export with --resolution {config.resolution} to deploy that")
    val = None
    if "onnx" in formats and ckpt.get("data"):
        try:
            val = data_mod.fixed_subset(trained_data(ckpt, resolution).val, args.val_images, 1)
        except UserError as e:
            print(f"note: top-1 check skipped, the training data is not available here ({e})")
    print(f"exporting {path} ({'EMA' if use_ema else 'raw'} weights, {resolution} px)", flush=True)
    return export.export_model(reparameterize(model).eval(), resolution, formats, stem, val=val)


def cmd_train(args):
    from nas import checkpoint, runs
    from nas.train_model import MODEL, TrainRecipe, default_out_dir, run_defaults, train_model
    from supernets.config import ArchConfig

    runtime_flags = {"device": args.device, "channels_last": args.channels_last, "threads": args.threads,
                     "compile": args.compile, "workers": args.loader_workers}
    if args.resume:
        out_dir = Path(args.resume)
        ckpt = checkpoint.load(out_dir / MODEL, (checkpoint.MODEL_FORMAT,))
        if args.config is not None:
            raise UserError("--resume continues the config recorded in the run; drop CONFIG")
        _refuse_recipe_changes(args, ckpt["recipe"], "train", {
            "init": "init", "data": "data", "img_size": "img_size", "batch_size": "batch_size", "lr": "lr",
            "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs", "smoothing": "label_smoothing",
            "mixup": "mixup", "cutmix": "cutmix", "aa": "auto_augment", "reprob": "re_prob",
            "drop_path_rate": "drop_path_rate", "ema_decay": "ema_decay", "clip_grad": "clip_grad",
            "accum_steps": "accum_steps", "teacher": "teacher", "teacher_weights": "teacher_weights",
            "distill": "distill", "distill_weight": "distill_weight", "distill_temperature": "distill_temperature",
            "seed": "seed", "amp": "amp"})
        recipe = TrainRecipe.from_dict({**ckpt["recipe"], **runtime_flags})
        if args.epochs is not None:
            recipe.epochs = args.epochs
        config, config_path = checkpoint.model_config(ckpt, out_dir / MODEL), None
    else:
        if args.config is None:
            raise UserError("give the ArchConfig YAML to train (e.g. one `nas slim` wrote), or --resume RUN_DIR")
        config_path = Path(args.config)
        config = ArchConfig.load(config_path)
        defaults = run_defaults(config_path)
        data = args.data or defaults.get("data", "digits")
        img_size = args.img_size or defaults.get("img_size") or _default_img_size(data, lambda: config.resolution)
        recipe = TrainRecipe(
            data=data, img_size=img_size, epochs=args.epochs or TrainRecipe.epochs, batch_size=args.batch_size,
            lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
            label_smoothing=args.smoothing, mixup=args.mixup, cutmix=args.cutmix, auto_augment=args.aa,
            re_prob=args.reprob, drop_path_rate=args.drop_path_rate, ema_decay=args.ema_decay,
            clip_grad=args.clip_grad, accum_steps=args.accum_steps,
            init=args.init, teacher=args.teacher, teacher_weights=args.teacher_weights, distill=args.distill,
            distill_weight=args.distill_weight, distill_temperature=args.distill_temperature, seed=args.seed,
            amp=args.amp, **runtime_flags)
        init_label = args.init if args.init in ("scratch", "inherited") else Path(args.init).stem
        name = args.name or f"{config_path.stem}-{init_label}" + (f"-{args.distill}kd" if args.teacher else "")
        out_dir = Path(args.out) if args.out else default_out_dir(config_path, Path(args.runs), name)
    recipe.check()
    runtime = recipe.runtime()
    print(f"training {config.name or config_path} ({config.family}) from {recipe.init} on {recipe.data} at "
          f"{recipe.img_size} px, {recipe.epochs} epochs, {runtime.device.type}"
          f"{', ' + recipe.amp if recipe.amp != 'off' else ''}"
          f"{f', {recipe.distill} distillation from {recipe.teacher}' if recipe.teacher else ''} -> {out_dir}",
          flush=True)
    with contextlib.nullcontext() if args.resume else runs.removed_if_stillborn(out_dir):
        result = train_model(config, recipe, out_dir, config_path=config_path, resume=bool(args.resume),
                             progress=not args.no_progress)
    final = result.final
    ema = f", EMA {final['ema_top1']:.2f}%" if recipe.ema_decay else ""
    print(f"final top-1: raw {final['val_top1']:.2f}%{ema} (started at {result.history[0]['val_top1']:.2f}%)")
    print(f"model: {result.path}  metrics: {out_dir / 'metrics.csv'}  curves: {out_dir / 'curves.png'}")
    print(f"export it: nas export {result.path}")
    return result


def cmd_eval(args) -> dict:
    from lut import store
    from nas import data as data_mod, engine
    from nas.report import costs
    from nas.train_model import load_trained, trained_data

    path = Path(args.model)
    model, config, ckpt, use_ema = load_trained(path, ema=not args.no_ema)
    data = trained_data(ckpt, ckpt["img_size"], args.data)
    if data.num_classes != config.num_classes:
        raise UserError(f"--data {data.source} has {data.num_classes} classes, the model predicts {config.num_classes}")
    runtime = engine.Runtime.of(args.compute)
    runtime.prepare(model)
    scores = engine.evaluate(model, data_mod.loader(data, data.val, 256, workers=4), runtime)
    table, predict = store.open_predictor(args.device, config.resolution, _tables_dir(args), not args.no_progress)
    ms = predict(config)
    c = costs(config, model.cpu())
    print(f"{path} ({'EMA' if use_ema else 'raw'} weights) on {data.source} val ({len(data.val)} images, "
          f"{ckpt['img_size']} px): top-1 {scores['top1']:.2f}%, top-5 {scores['top5']:.2f}%")
    print(f"params: {c['params_train'] / 1e6:.3f} M (train form), {c['params_deploy'] / 1e6:.3f} M (deploy)")
    print(f"latency on {args.device}@{config.resolution}: {ms:.3f} ms predicted ({store.provenance(table)['table']})")
    return {**scores, "latency_ms": ms}


def cmd_quickstart(args) -> None:
    """train-supernet -> lut build -> slim on the embedded defaults: the library's defaults, which
    are also each command's flag defaults."""
    from lut import store
    from nas import runs
    from nas.session import SupernetSession
    from nas.train import Recipe, train_supernet_run
    from supernets import io

    t0 = time.time()
    progress = not args.no_progress
    recipe = Recipe(epochs=args.epochs)
    recipe.check()
    ckpt_path = train_supernet_run(recipe, runs.new_run_dir(args.runs, recipe.family), progress=progress,
                                   log=lambda line: print(line, flush=True))
    tables_dir = Path(args.runs) / "tables"
    table_path = store.build_tables("cpu", [recipe.family], space=recipe.space, tables_dir=tables_dir,
                                    progress=progress)[-1]
    session = SupernetSession.open(supernet=ckpt_path, runs_dir=args.runs, device="cpu", tables_dir=tables_dir,
                                   progress=progress)
    target = args.target_ms
    if target is None:
        net = session.net
        start_ms = session.predictor(net.initial_choice().to_config(net.space, num_classes=net.num_classes))
        target = round(start_ms * args.target_fraction, 1)
        print(f"target: {target:g} ms ({args.target_fraction:g} x the full supernet's {start_ms:.1f} ms)")
    print(f"slimming to {target:g} ms", flush=True)
    with io.all_or_nothing():
        emitted = session.slim([target], ckpt_path.parent / "slim")
    _print_emitted(emitted, [target])
    config = emitted.configs[-1]
    print()
    print(f"quickstart done in {time.time() - t0:.0f}s")
    print(f"  supernet       {ckpt_path}")
    print(f"  latency table  {table_path}")
    print(f"  slimmed config {config}")
    print(f"  inspect it     nas show {config}")


# ---------------------------------------------------------------------------- parser
def _build_parser() -> argparse.ArgumentParser:
    from nas.engine import AMP_MODES, DEVICES
    from nas.slim import LAST_STEPS, PROPOSALS
    from nas.train import Recipe

    p = argparse.ArgumentParser(prog="nas", description="Supernet training, latency tables and latency-driven "
                                "slimming for efficient vision transformers.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp, tables=True):
        sp.add_argument("--runs", default=DEFAULT_RUNS, help="root of run directories (default: %(default)s)")
        if tables:
            sp.add_argument("--tables", default=None, help="latency tables directory (default: RUNS/tables)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")

    def accelerator_flags(sp):
        sp.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to train: auto (CUDA when present, else MPS, else CPU), cpu, cuda, mps")
        sp.add_argument("--amp", choices=AMP_MODES, default="off", help="autocast precision (fp16 adds a GradScaler)")
        sp.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster convs)")

    t = sub.add_parser("train-supernet", help="train a family's supernet once (weights + α)")
    t.add_argument("--family", default=None, help=f"a family or 'all' (default: a --space file's family, else "
                   f"{DEFAULT_FAMILY})")
    t.add_argument("--space", default="small", help="small (default: about the family's smallest variant, trains "
                   "in minutes on 2 cores), paper (every published variant is a point of it) or a space YAML")
    t.add_argument("--data", default="digits", help="'digits' (embedded), 'fashion-mnist' (Debian's "
                   "dataset-fashion-mnist; fashion-mnist:DIR for IDX files elsewhere) or an ImageFolder root with "
                   "train/ val/")
    t.add_argument("--epochs", type=int, default=None, help=f"default {Recipe.epochs}")
    t.add_argument("--batch-size", type=int, default=Recipe.batch_size)
    t.add_argument("--img-size", type=int, default=None, help="training resolution (default: 64 px for digits and "
                   "fashion-mnist, the space's deploy resolution for an image folder)")
    t.add_argument("--lr", type=float, default=Recipe.lr)
    t.add_argument("--arch-lr", type=float, default=Recipe.arch_lr, help="learning rate of the α logits")
    t.add_argument("--mixing", choices=["soft", "hard"], default=Recipe.mixing,
                   help="soft: weighted sum of all paths (paper eq. 8); hard: straight-through single path")
    t.add_argument("--train-widths", action=argparse.BooleanOptionalAction, default=Recipe.train_widths,
                   help="train every stage's width options with α and channel masks (FBNetV2; default); "
                        "--no-train-widths trains at full width only")
    t.add_argument("--tau-max", type=float, default=Recipe.tau_max)
    t.add_argument("--tau-min", type=float, default=Recipe.tau_min)
    t.add_argument("--seed", type=int, default=Recipe.seed)
    t.add_argument("--threads", type=int, default=Recipe.threads)
    t.add_argument("--name", default=None, help="run id (default: FAMILY-DATE-TIME)")
    t.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR")
    accelerator_flags(t)
    t.add_argument("--ray-address", default=None, help="train with Ray Train (DDP) on this cluster ('auto': the local one)")
    t.add_argument("--workers", type=int, default=1,
                   help="DDP workers (Ray Train); more than 1 without --ray-address starts a local Ray cluster")
    t.add_argument("--gpus-per-worker", type=float, default=None,
                   help="with Ray Train: GPUs per worker (default: 1 when --device is CUDA, else 0)")
    t.add_argument("--storage-path", default=None, help="with --ray-address: checkpoint storage shared by the nodes "
                   "(default: RUN_DIR/ray)")
    common(t, tables=False)
    t.set_defaults(func=cmd_train_supernet)

    lut = sub.add_parser("lut", help="latency lookup tables")
    lsub = lut.add_subparsers(dest="lut_command", required=True, metavar="LUT_COMMAND")
    b = lsub.add_parser("build", help="measure every op a family's space can need on a local device")
    b.add_argument("--device", default="cpu")
    b.add_argument("--family", default="efficientformer", help="a family or 'all'")
    b.add_argument("--resolution", type=int, default=None, help="deploy resolution (default: the space's)")
    b.add_argument("--space", choices=["small", "paper", "all"], default="all", help="which shipped spaces' ops (default: %(default)s)")
    b.add_argument("--num-classes", type=int, default=10, help="classifier size priced by the head op")
    b.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    b.add_argument("--calibration-samples", type=int, default=12,
                   help="random networks timed end to end to fit the table's cache blend")
    b.add_argument("--recalibrate", action="store_true", help="refit the cache blend even if nothing new was measured")
    common(b)
    b.set_defaults(func=cmd_lut_build)

    x = lsub.add_parser("export", help="Core ML packages of the ops an Apple device's table lacks, to time on the device")
    x.add_argument("--device", default="iphone12")
    x.add_argument("--family", default="efficientformer", help="a family or 'all'")
    x.add_argument("--resolution", type=int, default=None, help="deploy resolution (default: the space's)")
    x.add_argument("--space", choices=["small", "paper", "all"], default="all", help="which shipped spaces' ops (default: %(default)s)")
    x.add_argument("--num-classes", type=int, default=10)
    x.add_argument("--out", default=None, help="output directory (default: RUNS/apple/DEVICE@RES)")
    common(x)
    x.set_defaults(func=cmd_lut_export)

    im = lsub.add_parser("import", help="add on-device timings (CSV: key or file, ms) to a device's table")
    im.add_argument("timings", help="CSV with columns ms and key (or file, from the export's manifest.csv)")
    im.add_argument("--device", default="iphone12")
    im.add_argument("--resolution", type=int, default=None, help="table resolution (default: the spaces')")
    im.add_argument("--space", choices=["small", "paper", "all"], default="all", help="which shipped spaces' ops (default: %(default)s)")
    im.add_argument("--num-classes", type=int, default=10, help="classifier size of the spaces the keys come from")
    common(im)
    im.set_defaults(func=cmd_lut_import)

    dv = lsub.add_parser("devices", help="list devices (built-in and from TABLES/devices.yaml) and their tables")
    dv.add_argument("--num-classes", type=int, default=10, help="classifier size of the spaces checked for coverage")
    dv.add_argument("--space", choices=["small", "paper", "all"], default="all", help="which shipped spaces' ops (default: %(default)s)")
    common(dv)
    dv.set_defaults(func=cmd_lut_devices)

    es = lsub.add_parser("estimate", help="estimated Core ML tables (iphone12/iphone13) for every family's space")
    es.add_argument("--device", default="iphone12")
    es.add_argument("--family", default="all", help="a family or 'all'")
    es.add_argument("--resolution", type=int, nargs="+", default=[224, 256], help="table resolutions")
    es.add_argument("--space", choices=["small", "paper", "all"], default="all", help="which shipped spaces' ops (default: %(default)s)")
    es.add_argument("--num-classes", type=int, nargs="+", default=[10, 1000], help="classifier sizes to cover")
    es.add_argument("--refit", action="store_true", help="profile the published models and refit the cost model")
    es.add_argument("--only-missing", action="store_true",
                    help="estimate only the ops the table lacks (default: re-estimate every estimated entry)")
    common(es)
    es.set_defaults(func=cmd_lut_estimate)

    em = lsub.add_parser("estimate-model", help="estimated Core ML latency of any timm model")
    em.add_argument("--device", default="iphone12")
    em.add_argument("--timm", required=True, help="timm model name (or nas_<family>_<variant>)")
    em.add_argument("--resolution", type=int, default=None, help="input resolution (default: the model's)")
    common(em)
    em.set_defaults(func=cmd_lut_estimate_model)

    v = lsub.add_parser("validate", help="predicted vs measured latency of random configs of a family's space")
    v.add_argument("--device", default="cpu")
    v.add_argument("--family", default="efficientformer", help="a family or 'all'")
    v.add_argument("--samples", type=int, default=30)
    v.add_argument("--seed", type=int, default=1, help="sampling seed (calibration uses 0)")
    v.add_argument("--resolution", type=int, default=None, help="deploy resolution (default: the space's)")
    v.add_argument("--space", choices=["small", "paper"], default="small", help="which shipped space to sample")
    v.add_argument("--num-classes", type=int, default=10)
    v.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    v.add_argument("--out", default=None, help="output directory (default: RUNS/validate/DEVICE@RES-FAMILY)")
    common(v)
    v.set_defaults(func=cmd_lut_validate)

    def supernet_flags(sp, target_help: str):
        """What `_session` reads: the supernet, the device, the evaluation subsets."""
        sp.add_argument("--target-ms", type=float, nargs="+", required=True, help=target_help)
        sp.add_argument("--device", default="cpu")
        sp.add_argument("--family", default=None, help=f"family (default: the --supernet's, else {DEFAULT_FAMILY})")
        sp.add_argument("--supernet", default=None, help="checkpoint (default: newest finished run of --family)")
        sp.add_argument("--calib-images", type=int, default=256, help="training images for BN recalibration")
        sp.add_argument("--val-images", type=int, default=1000, help="fixed validation subset size")
        sp.add_argument("--channel-order", choices=["auto", "importance", "natural"], default="auto",
                        help="auto (default): the trained order for a supernet with width α, L1 importance "
                             "order for one trained at full width")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--threads", type=int, default=2, help="threads for accuracy evaluation")

    s = sub.add_parser("slim", help="latency-driven slimming of a trained supernet to a target latency "
                       "(--family all: every family's newest supernet, compared)")
    supernet_flags(s, "latency target(s) in ms; several (e.g. 7 3 1.6) slim once and emit a config at each")
    s.add_argument("--proposals", choices=PROPOSALS, default=PROPOSALS[0],
                   help="paper (default, §4.2): the network's least important slot and stage by α; per-stage: "
                        "each action in every stage, the measured accuracy drop per ms picks the stage (~4x the "
                        "evaluations)")
    s.add_argument("--last-step", choices=LAST_STEPS, default=LAST_STEPS[0],
                   help="least-drop (default): the step that meets a target costs the least accuracy, not the "
                        "least per ms (which overshoots the target); ratio: the paper's rule throughout")
    s.add_argument("--out", default=None, help="output directory (default: RUN_DIR/slim)")
    s.add_argument("--ray-address", default=None,
                   help="run each step's accuracy evaluations as tasks on this Ray cluster ('auto': the local one)")
    common(s)
    s.set_defaults(func=cmd_slim)

    se = sub.add_parser("search", help="Optuna NSGA-II search of a trained supernet: accuracy vs latency, within a budget")
    supernet_flags(se, "latency budget(s) in ms (the largest is the constraint; the best member is reported "
                   "for each)")
    se.add_argument("--trials", type=int, default=100, help="finished trials the study should hold")
    se.add_argument("--population", type=int, default=16, help="NSGA-II population size")
    se.add_argument("--storage", default=None,
                    help="Optuna storage URL, e.g. sqlite:///s.db or postgresql://... (default: a journal file in --out)")
    se.add_argument("--study", default=None, help="study name (default: FAMILY@DEVICE-TARGETms)")
    se.add_argument("--out", default=None, help="output directory (default: RUN_DIR/search/FAMILY@DEVICE-TARGETms)")
    se.add_argument("--ray-address", default=None, help="run trials as tasks on this Ray cluster ('auto': the local one)")
    se.add_argument("--workers", type=int, default=2, help="with --ray-address: Ray tasks sharing the study")
    common(se)
    se.set_defaults(func=cmd_search)

    sh = sub.add_parser("show", help="params, MACs, predicted latency and blocks of an ArchConfig; "
                        "α of a supernet (run directory or supernet.pt)")
    sh.add_argument("config", help="ArchConfig YAML, or a supernet run directory / checkpoint")
    sh.add_argument("--device", default=None, help="only this device's tables")
    common(sh)
    sh.set_defaults(func=cmd_show)

    e = sub.add_parser("export", help="reparameterize a trained model (or an ArchConfig) and export it to ONNX / "
                       "Core ML, verified")
    e.add_argument("config", help="a model checkpoint (`nas train`'s model.pt, slim's inherited .pt), or an ArchConfig "
                   "YAML (e.g. one `nas slim` wrote, or a published variant)")
    e.add_argument("--format", choices=["onnx", "coreml", "all"], default="all")
    e.add_argument("--resolution", type=int, default=None,
                   help="input resolution (default: the config's; a checkpoint's training resolution)")
    e.add_argument("--weights", default=None, help="with a YAML: state dict of the config's model (default: random init)")
    e.add_argument("--no-ema", action="store_true", help="with a checkpoint: the raw weights, not the EMA ones")
    e.add_argument("--val-images", type=int, default=1000,
                   help="with a checkpoint: validation images on which ONNX Runtime's top-1 must equal torch's")
    e.add_argument("--out", default=None, help="output path without suffix (default: next to the input)")
    e.set_defaults(func=cmd_export)

    tr = sub.add_parser("train", help="train one ArchConfig as a standalone model (from scratch or inherited weights)")
    tr.add_argument("config", nargs="?", default=None, help="ArchConfig YAML (e.g. one `nas slim` wrote)")
    tr.add_argument("--init", default="scratch",
                    help="scratch | inherited (the .pt slim wrote next to the config) | PATH (a supernet.pt: the "
                    "sub-network's slices; or a model.pt)")
    tr.add_argument("--data", default=None, help="digits | fashion-mnist[:DIR] | ImageFolder root "
                    "(default: the data of the supernet the config came from, else digits)")
    tr.add_argument("--img-size", type=int, default=None,
                    help="training resolution (default: the supernet's, else 64 px for digits and fashion-mnist and "
                    "the config's deploy resolution for an image folder)")
    tr.add_argument("--epochs", type=int, default=None, help="default 30")
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--weight-decay", type=float, default=0.025)
    tr.add_argument("--warmup-epochs", type=int, default=1)
    tr.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    tr.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (timm Mixup; 0 = off)")
    tr.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0 = off)")
    tr.add_argument("--aa", default="rand-m9-mstd0.5-inc1", help="RandAugment policy for image folders ('' = off)")
    tr.add_argument("--reprob", type=float, default=0.25, help="random erasing probability for image folders")
    tr.add_argument("--drop-path-rate", type=float, default=0.0,
                    help="stochastic depth at the last block, linear from 0 at the first (timm DropPath)")
    tr.add_argument("--ema-decay", type=float, default=0.9998, help="EMA decay with warm-up (timm ModelEmaV3; 0 = off)")
    tr.add_argument("--clip-grad", type=float, default=0.0, help="gradient norm clip (0 = off)")
    tr.add_argument("--accum-steps", type=int, default=1, help="gradient accumulation steps")
    tr.add_argument("--teacher", default=None,
                    help="distillation teacher: a supernet.pt or model.pt, or a timm model name with --teacher-weights")
    tr.add_argument("--teacher-weights", default=None, help="state dict of a timm teacher")
    tr.add_argument("--distill", choices=["none", "soft", "hard"], default="none")
    tr.add_argument("--distill-weight", type=float, default=0.5, help="weight of the distillation term")
    tr.add_argument("--distill-temperature", type=float, default=1.0, help="temperature of soft distillation")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=2)
    tr.add_argument("--loader-workers", type=int, default=4, help="data loader processes for image folders")
    accelerator_flags(tr)
    tr.add_argument("--compile", action="store_true", help="torch.compile the training step")
    tr.add_argument("--name", default=None, help="output folder name (default: CONFIG-INIT)")
    tr.add_argument("--out", default=None, help="output folder (default: RUN/train/NAME next to the config's run)")
    tr.add_argument("--resume", metavar="OUT_DIR", default=None, help="continue the training in OUT_DIR")
    common(tr, tables=False)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="top-1/top-5, parameters and predicted latency of a trained model")
    ev.add_argument("model", help="model checkpoint (model.pt from `nas train`, or inherited weights from slim)")
    ev.add_argument("--data", default=None, help="default: the data it was trained on")
    ev.add_argument("--device", default="iphone12", help="latency table device")
    ev.add_argument("--compute", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to evaluate")
    ev.add_argument("--no-ema", action="store_true", help="the raw weights, not the EMA ones")
    common(ev)
    ev.set_defaults(func=cmd_eval)

    q = sub.add_parser("quickstart", help="train-supernet -> lut build -> slim on the embedded defaults")
    q.add_argument("--epochs", type=int, default=Recipe.epochs)
    q.add_argument("--target-ms", type=float, default=None)
    q.add_argument("--target-fraction", type=float, default=0.6,
                   help="without --target-ms: this fraction of the full supernet's latency")
    common(q, tables=False)
    q.set_defaults(func=cmd_quickstart)
    return p


def _parse(argv: list[str]) -> argparse.Namespace:
    return _build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    args = _parse(sys.argv[1:] if argv is None else argv)
    from lut.backends import BackendError
    from lut.devices import DeviceError
    from lut.table import MissingKeysError, TableError
    from supernets import io
    from supernets.config import ConfigError

    try:
        args.func(args)
    except ParameterError as e:   # a library parameter, said as the flag that sets it
        print(f"nas: error: {e.as_flag(FLAG_OF_PARAMETER)}", file=sys.stderr)
        return 2
    except (UserError, ConfigError, TableError, DeviceError, BackendError, MissingKeysError, io.WriteError) as e:
        print(f"nas: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in io.WriteError.ERRNOS:
            raise
        print(f"nas: error: {io.WriteError.describe(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
