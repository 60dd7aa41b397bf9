"""The ``nas`` command line.

Every error a user can cause prints one line (``nas: error: ...``) saying what is wrong and how
to fix it, exits 2, and leaves no partial file behind (all writes are atomic).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

from nas.engine import add_recipe_flags, recipe_flags
from nas.errors import ParameterError, UserError
from nas.runs import DEFAULT_FAMILY
from nas.supernet_training import Recipe
from nas.train_model import TrainRecipe
from supernets import registry

DEFAULT_RUNS = "runs"
# library parameters whose flag is not ``--`` + the name with dashes (a recipe's: as it declares them)
FLAG_OF_PARAMETER = {"study_name": "--study", **{f.name: f.metadata["flag"] for f in dataclasses.fields(TrainRecipe)
                                                 if f.metadata.get("flag")}}


# ---------------------------------------------------------------------------- helpers
def _say(line: str) -> None:
    """The library's progress lines (`log=`), shown as they come."""
    print(line, flush=True)


def _tables_dir(args) -> Path:
    return Path(args.tables) if args.tables else Path(args.runs) / "tables"


def _common(sp, tables=True):
    sp.add_argument("--runs", default=DEFAULT_RUNS, help="root of run directories (default: %(default)s)")
    if tables:
        sp.add_argument("--tables", default=None, help="latency tables directory (default: RUNS/tables)")
    sp.add_argument("--no-progress", action="store_true", help="no progress bars")


def _table_build_flags(sp):
    sp.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (fewer: faster, noisier)")
    sp.add_argument("--calibration-samples", type=int, default=12,
                    help="random networks timed end to end to fit the table's cache blend")


def _subset_flags(sp):
    """The evaluation subsets slimming scores candidates on."""
    sp.add_argument("--calib-images", type=int, default=None, help="training images for BN recalibration "
                    "(default 2048, fewer where 2048 + 10000 images would exceed 2 GiB at the training size)")
    sp.add_argument("--val-images", type=int, default=None, help="fixed validation subset size (default "
                    "10000, fewer as --calib-images; a smaller set is used whole)")


def _supernet_flags(sp, target_help: str):
    """What `_session` reads: the supernet, the device, the evaluation subsets."""
    sp.add_argument("--target-ms", type=float, nargs="+", required=True, help=target_help)
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--family", default=None, help=f"family (default: the --supernet's, else {DEFAULT_FAMILY})")
    sp.add_argument("--supernet", default=None, help="checkpoint (default: newest finished run of --family)")
    _subset_flags(sp)
    sp.add_argument("--channel-order", choices=["auto", "importance", "natural"], default="auto",
                    help="auto (default): the trained order for a supernet with width α, L1 importance "
                         "order for one trained at full width")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--threads", type=int, default=2, help="threads for accuracy evaluation")


# ---------------------------------------------------------------------------- commands
# the recipe each training command's flags set (flag attribute -> recipe field), as the recipe declares them
SUPERNET_RECIPE_FLAGS = {attr: f.name for attr, f in recipe_flags(Recipe).items()}
MODEL_RECIPE_FLAGS = {attr: f.name for attr, f in recipe_flags(TrainRecipe).items()}


def _recipe_fields(args, flags: dict[str, str]) -> dict:
    """The recipe fields the flags set; None (not given, the library decides) left out."""
    return {field: getattr(args, attr) for attr, field in flags.items() if getattr(args, attr) is not None}


def _resume_changes(args, command: str, recipe: type) -> dict:
    """What a --resume asks to change: the flags given (not at their defaults) and the runtime
    flags that have a value (where and how fast the run goes). The library refuses a change to
    any other recipe field of the run."""
    defaults, runtime = vars(_parse([command])), recipe.runtime_fields()
    return {f.name: getattr(args, attr) for attr, f in recipe_flags(recipe).items()
            if getattr(args, attr) is not None and (f.name in runtime or getattr(args, attr) != defaults[attr])}


def _train_supernet_parser(sub) -> None:
    t = sub.add_parser("train-supernet", help="train a family's supernet once (weights + α)")
    add_recipe_flags(t, Recipe)
    t.add_argument("--name", default=None, help="run id (default: FAMILY-DATE-TIME)")
    t.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR")
    t.add_argument("--ray-address", default=None, help="train with Ray Train (DDP) on this cluster ('auto': the local one)")
    t.add_argument("--workers", type=int, default=1,
                   help="DDP workers (Ray Train); more than 1 without --ray-address starts a local Ray cluster")
    t.add_argument("--gpus-per-worker", type=float, default=None,
                   help="with Ray Train: GPUs per worker (default: 1 when --device is CUDA, else 0)")
    t.add_argument("--storage-path", default=None, help="with --ray-address: checkpoint storage shared by the nodes "
                   "(default: RUN_DIR/ray)")
    _common(t, tables=False)
    t.set_defaults(func=cmd_train_supernet)


def cmd_train_supernet(args) -> Path:
    from nas import runs
    from nas.train import resume_supernet_run, supernet_recipe, train_every_family, train_supernet_run

    ray = {"workers": args.workers, "ray_address": args.ray_address, "gpus_per_worker": args.gpus_per_worker,
           "storage_path": args.storage_path, "progress": not args.no_progress,
           "log": _say}
    if args.resume:
        path = resume_supernet_run(args.resume, **ray, **_resume_changes(args, "train-supernet", Recipe))
    elif args.family == "all":
        import datetime

        name = args.name or f"all-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        print(f"training every family's supernet as {args.runs}/{name}-FAMILY (re-run with --name {name} to resume)",
              flush=True)
        fields = _recipe_fields(args, SUPERNET_RECIPE_FLAGS)
        del fields["family"]
        path = train_every_family(args.runs, name, **ray, **fields)
    else:
        recipe = supernet_recipe(**_recipe_fields(args, SUPERNET_RECIPE_FLAGS))
        path = train_supernet_run(recipe, runs.new_run_dir(args.runs, recipe.family, args.name), **ray)
    print(f"supernet: {path}")
    return path


def _lut_build_parser(sub) -> None:
    b = sub.add_parser("build", help="measure every op a family's space can need on a local device")
    b.add_argument("--device", default="cpu")
    b.add_argument("--family", default="efficientformer", help="a family or 'all'")
    b.add_argument("--resolution", type=int, default=None, help="deploy resolution (default: the space's)")
    b.add_argument("--space", choices=["small", "paper", "all"], default="all", help="which shipped spaces' ops (default: %(default)s)")
    b.add_argument("--num-classes", type=int, default=10, help="classifier size priced by the head op")
    _table_build_flags(b)
    b.add_argument("--recalibrate", action="store_true", help="refit the cache blend even if nothing new was measured")
    _common(b)
    b.set_defaults(func=cmd_lut_build)


def cmd_lut_build(args) -> Path:
    from lut import store

    return store.build_tables(args.device, registry.searchable_families(args.family), space=args.space, resolution=args.resolution,
                              num_classes=args.num_classes, tables_dir=_tables_dir(args), rounds=args.rounds,
                              calibration_samples=args.calibration_samples, recalibrate=args.recalibrate,
                              progress=not args.no_progress, log=_say)[-1]


def _lut_devices_parser(sub) -> None:
    dv = sub.add_parser("devices", help="list devices (built-in and from TABLES/devices.yaml) and their tables")
    dv.add_argument("--num-classes", type=int, default=10, help="classifier size of the spaces checked for coverage")
    dv.add_argument("--space", choices=["small", "paper", "all"], default="all", help="which shipped spaces' ops (default: %(default)s)")
    _common(dv)
    dv.set_defaults(func=cmd_lut_devices)


def cmd_lut_devices(args) -> None:
    from collections import Counter

    from lut import store
    from lut.devices import SHIPPED_TABLES, all_devices, tables_of
    from lut.table import LatencyTable, TableError
    from supernets.registry import family_names

    tables_dir = _tables_dir(args)

    needed_ops: dict = {}     # shared by the tables: those of one resolution need the same ops

    def coverage(table: LatencyTable) -> str:
        counts = store.coverage(table, family_names(), args.space, args.num_classes, needed_ops)
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


def _lut_export_parser(sub) -> None:
    x = sub.add_parser("export", help="the ops a device's table lacks, to time on the device (Core ML packages for "
                       "an iPhone, ExecuTorch .pte programs and an adb script for a phone)")
    x.add_argument("--device", default="iphone12")
    x.add_argument("--family", default="efficientformer", help="a family or 'all'")
    x.add_argument("--resolution", type=int, default=None, help="deploy resolution (default: the space's)")
    x.add_argument("--space", choices=["small", "paper", "all"], default="all", help="which shipped spaces' ops (default: %(default)s)")
    x.add_argument("--num-classes", type=int, default=10)
    x.add_argument("--out", default=None, help="output directory (default: RUNS/apple/DEVICE@RES for Core ML, "
                   "RUNS/android/DEVICE@RES for ExecuTorch)")
    _common(x)
    x.set_defaults(func=cmd_lut_export)


def cmd_lut_export(args) -> Path:
    from lut import store

    return store.export_for_timing(args.device, registry.searchable_families(args.family), out_dir=args.out,
                                   runs_dir=args.runs, space=args.space, resolution=args.resolution,
                                   num_classes=args.num_classes, tables_dir=_tables_dir(args),
                                   progress=not args.no_progress, log=_say)


def _lut_import_parser(sub) -> None:
    im = sub.add_parser("import", help="add on-device timings (CSV: key or file, ms) to a device's table")
    im.add_argument("timings", help="CSV with columns ms and key (or file, from the export's manifest.csv)")
    im.add_argument("--device", default="iphone12")
    im.add_argument("--resolution", type=int, default=None, help="table resolution (default: the spaces')")
    im.add_argument("--space", choices=["small", "paper", "all"], default="all", help="which shipped spaces' ops (default: %(default)s)")
    im.add_argument("--num-classes", type=int, default=10, help="classifier size of the spaces the keys come from")
    _common(im)
    im.set_defaults(func=cmd_lut_import)


def cmd_lut_import(args) -> Path:
    from lut import store

    table, n = store.import_timings(args.timings, args.device, space=args.space, resolution=args.resolution,
                                    num_classes=args.num_classes, tables_dir=_tables_dir(args))
    print(f"imported {n} timings into {table.path} ({len(table.entries)} entries)")
    return table.path


def _lut_estimate_parser(sub) -> None:
    es = sub.add_parser("estimate", help="estimated Core ML tables (iphone12/iphone13) for every family's space")
    es.add_argument("--device", default="iphone12")
    es.add_argument("--family", default="all", help="a family or 'all'")
    es.add_argument("--resolution", type=int, nargs="+", default=[224, 256], help="table resolutions")
    es.add_argument("--space", choices=["small", "paper", "all"], default="all", help="which shipped spaces' ops (default: %(default)s)")
    es.add_argument("--num-classes", type=int, nargs="+", default=[10, 1000], help="classifier sizes to cover")
    es.add_argument("--refit", action="store_true", help="profile the published models and refit the cost model")
    es.add_argument("--only-missing", action="store_true",
                    help="estimate only the ops the table lacks (default: re-estimate every estimated entry)")
    _common(es)
    es.set_defaults(func=cmd_lut_estimate)


def cmd_lut_estimate(args) -> list[Path]:
    from lut import store

    return store.estimate_tables(args.device, registry.searchable_families(args.family),
                                 resolutions=args.resolution, space=args.space, num_classes=args.num_classes,
                                 tables_dir=_tables_dir(args), refit=args.refit, redo=not args.only_missing,
                                 progress=not args.no_progress, log=_say)


def _lut_estimate_model_parser(sub) -> None:
    em = sub.add_parser("estimate-model", help="estimated Core ML latency of any timm model")
    em.add_argument("--device", default="iphone12")
    em.add_argument("--timm", required=True, help="timm model name (or nas_<family>_<variant>)")
    em.add_argument("--resolution", type=int, default=None, help="input resolution (default: the model's)")
    _common(em)
    em.set_defaults(func=cmd_lut_estimate_model)


def cmd_lut_estimate_model(args) -> float:
    import numpy as np

    from lut import published, store
    from lut.devices import get_device

    model, source = store.cost_model(get_device(args.device, _tables_dir(args)), _tables_dir(args))
    try:
        feats, res = published.model_features(args.timm, args.resolution)
    except RuntimeError as e:
        raise UserError(f"--timm {args.timm}: {str(e).splitlines()[0]} (list names with timm.list_models())") from None
    family = published.architecture_family(args.timm)
    seen = family in model.families
    ms = model.network_ms(feats, source, family)
    # the error bar of this kind of estimate: held out by model where the calibration holds the
    # family (the estimate uses its factor), by whole family where it does not
    errors = (model.heldout.get("seen_by_source" if seen else "by_source") or {}).get(source)
    span = ""
    if errors:
        qs, ratios = zip(*errors["ratio_quantiles"])
        span = f"; 80 % interval {ms * np.interp(0.1, qs, ratios):.2f}–{ms * np.interp(0.9, qs, ratios):.2f} ms"
    print(f"{args.timm} @ {res} px on {args.device}: {ms:.3f} ms estimated ({model.version}, as {source}{span})")
    print("  " + ", ".join(f"{k} {ms:.3f}" for k, ms in model.breakdown(feats, source))
          + f", call overhead {model.overheads[source]:.3f}")
    if seen:
        print(f"  x{model.family_factor(family, source):.2f}: how {family} models ran against their op counts in the "
              "published latencies")
    else:
        print(f"  {family}: no published latency of this architecture family; priced from its op counts alone")
        note = model.swish_note(feats, source)   # where seen, the family's factor carries it
        if note:
            print("  " + note)
    return ms


def _lut_validate_parser(sub) -> None:
    v = sub.add_parser("validate", help="predicted vs measured latency of random configs of a family's space")
    v.add_argument("--device", default="cpu")
    v.add_argument("--family", default="efficientformer", help="a family or 'all'")
    v.add_argument("--samples", type=int, default=30)
    v.add_argument("--seed", type=int, default=1, help="sampling seed (calibration uses 0)")
    v.add_argument("--resolution", type=int, default=None, help="deploy resolution (default: the space's)")
    v.add_argument("--space", choices=["small", "paper"], default="small", help="which shipped space to sample")
    v.add_argument("--num-classes", type=int, default=10)
    v.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    v.add_argument("--out", default=None, help="output directory (default: RUNS/validate/DEVICE@RES-FAMILY)")
    _common(v)
    v.set_defaults(func=cmd_lut_validate)


def cmd_lut_validate(args) -> list[Path]:
    from lut import store

    return store.validate_tables(args.device, registry.searchable_families(args.family), space=args.space, resolution=args.resolution,
                                 num_classes=args.num_classes, samples=args.samples, seed=args.seed,
                                 rounds=args.rounds, tables_dir=_tables_dir(args), out_dir=args.out,
                                 runs_dir=args.runs, progress=not args.no_progress,
                                 log=_say)


def _session(args, family: str | None = None, supernet: str | None = None):
    """The supernet, table, predictor and evaluator that slim and search share (``nas.session``);
    `family` and `supernet` stand in for the flags (``--family all`` slims one family at a time)."""
    from nas.session import SupernetSession
    from nas.slim import checked_targets

    checked_targets(args.target_ms)   # a bad target is refused before anything loads
    return SupernetSession.open(
        supernet=supernet or args.supernet, runs_dir=args.runs, family=family or args.family, device=args.device,
        tables_dir=_tables_dir(args), threads=args.threads, calib_images=args.calib_images,
        val_images=args.val_images, seed=args.seed, channel_order_rule=args.channel_order,
        progress=not args.no_progress)


def _slim_parser(sub) -> None:
    from nas.slim import LAST_STEPS, PROPOSALS

    s = sub.add_parser("slim", help="latency-driven slimming of a trained supernet to a target latency "
                       "(--family all: every family's newest supernet, compared)")
    _supernet_flags(s, "latency target(s) in ms; several (e.g. 7 3 1.6) slim once and emit a config at each")
    s.add_argument("--proposals", choices=PROPOSALS, default=PROPOSALS[0],
                   help="paper (default, §4.2): the network's least important slot and stage by α; per-stage: "
                        "each action in every stage, the measured accuracy drop per ms picks the stage (~4x the "
                        "evaluations)")
    s.add_argument("--last-step", choices=LAST_STEPS, default=LAST_STEPS[0],
                   help="least-drop (default): the step that meets a target costs the least accuracy, not the "
                        "least per ms (which overshoots the target); ratio: the paper's rule throughout")
    s.add_argument("--confidence", type=float, default=None, metavar="P",
                   help="estimated tables (iphone12/13): slim until the latency the true one stays under with "
                        "probability P (e.g. 0.9, from the estimate's out-of-sample errors) meets the target, "
                        "not the prediction")
    s.add_argument("--out", default=None, help="output directory (default: RUN_DIR/slim)")
    s.add_argument("--ray-address", default=None,
                   help="run each step's accuracy evaluations as tasks on this Ray cluster ('auto': the local one)")
    _common(s)
    s.set_defaults(func=cmd_slim)


def cmd_slim(args) -> Path:
    from nas.core import io

    with io.all_or_nothing():   # configs, weights, trajectory and plot stand or fall together
        if args.family == "all":
            return _slim_every_family(args)
        return _slim_one(args).configs[-1]


def _slim_one(args, family: str | None = None, supernet: str | None = None, out: str | None = None):
    """Slim one family's supernet (printing what it wrote); returns the `Emitted`. `family`,
    `supernet` and `out` stand in for the flags."""
    from nas.slim import checked_targets

    session = _session(args, family, supernet)
    targets = checked_targets(args.target_ms)
    out = out or args.out
    print(f"slimming {session.family} supernet {session.ckpt_path} for {args.device}@{session.net.space.resolution} "
          f"to {', '.join(f'{t:g}' for t in targets)} ms", flush=True)
    emitted = session.slim(targets, Path(out) if out else session.ckpt_path.parent / "slim",
                           proposals=args.proposals, last_step=args.last_step, ray_address=args.ray_address,
                           threads=args.threads, confidence=args.confidence)
    _print_emitted(emitted, targets)
    return emitted


def _print_emitted(emitted, targets: list[float]) -> None:
    from lut.breakdown import swish_note
    from supernets.config import ArchConfig

    start = emitted.result.steps[0]
    for t, yaml_path, weights in zip(targets, emitted.configs, emitted.weights):
        _, step = emitted.step_at(t)
        if step.step == 0:
            print(f"note: {t:g} ms is at or above the supernet's start ({start.latency_ms:.3f} ms, every stage at its "
                  f"widest with every slot kept): no slimming was needed, the start is emitted; a larger space or "
                  f"a smaller target slims")
        cfg = ArchConfig.load(yaml_path)
        trust = f", {emitted.table.trust(cfg, step.latency_ms)}" if emitted.table is not None else ""
        bound = (f", {cfg.meta['confidence']:g}-confidence bound {cfg.meta['upper_ms']:.3f} ms <= {t:g} ms"
                 if "upper_ms" in cfg.meta else "")
        print(f"config: {yaml_path}  ({step.latency_ms:.3f} ms predicted{trust}{bound}; {step.accuracy:.2f}% "
              f"inherited top-1, step {step.step})")
        note = swish_note(emitted.table, cfg)
        if note:
            print(f"  {note}")
        print(f"inherited weights: {weights}  (train them: nas train {yaml_path} --init inherited)")
    print(f"trajectory: {emitted.trajectory[0]}  plot: {emitted.trajectory[1]}  where the milliseconds go, first "
          f"and last step: {emitted.trajectory[2]}")


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
        return _slim_one(args, family=family, supernet=str(ckpt), out=str(out_dir))

    rows, csv_path, png_path = slim_every_family(registry.searchable_families("all"), targets, out_dir, runs_dir=args.runs,
                                                 slim_one=slim_one, device=args.device,
                                                 log=_say)
    print(f"\n{'family':<16s} {'target':>7s} {'ms':>8s} {'top-1':>7s} {'params M':>9s} {'MACs G':>7s} {'steps':>5s}  status")
    for r in rows:
        print(f"{r['family']:<16s} {r['target_ms']:>7g} {str(r['predicted_ms']):>8s} {str(r['inherited_top1']):>7s} "
              f"{str(r['params_m']):>9s} {str(r['macs_g']):>7s} {str(r['steps']):>5s}  {r['status']}"
              + (f" ({r['floor_ms']} ms)" if r["floor_ms"] != "" else ""))
    print(f"table: {csv_path}  plot: {png_path}")
    return csv_path


def _search_parser(sub) -> None:
    se = sub.add_parser("search", help="Optuna NSGA-II search of a trained supernet: accuracy vs latency, within a budget")
    _supernet_flags(se, "latency budget(s) in ms (the largest is the constraint; the best member is reported "
                   "for each)")
    se.add_argument("--trials", type=int, default=100, help="finished trials the study should hold")
    se.add_argument("--population", type=int, default=16, help="NSGA-II population size")
    se.add_argument("--storage", default=None,
                    help="Optuna storage URL, e.g. sqlite:///s.db or postgresql://... (default: a journal file in --out)")
    se.add_argument("--study", default=None, help="study name (default: FAMILY@DEVICE-TARGETms)")
    se.add_argument("--out", default=None, help="output directory (default: RUN_DIR/search/FAMILY@DEVICE-TARGETms)")
    se.add_argument("--ray-address", default=None, help="run trials as tasks on this Ray cluster ('auto': the local one)")
    se.add_argument("--workers", type=int, default=2, help="with --ray-address: Ray tasks sharing the study")
    _common(se)
    se.set_defaults(func=cmd_search)


def cmd_search(args) -> Path:
    from nas.slim import checked_targets

    targets = checked_targets(args.target_ms)
    session = _session(args)
    found = session.search(
        targets, args.out, trials=args.trials, storage=args.storage, study_name=args.study, seed=args.seed,
        population=args.population, ray_address=args.ray_address, workers=args.workers, threads=args.threads,
        progress=not args.no_progress, log=_say)
    result, out_dir, budget = found.result, found.out_dir, targets[0]
    n = len(result.study.trials)
    if result.best is None:
        print(f"{n} trials, none within {budget:g} ms; trials: {out_dir / 'trials.csv'}")
    else:
        from nas.search import choice_of

        b = result.best
        best = choice_of(b.params, session.net.space).to_config(session.net.space, session.net.num_classes)
        print(f"{n} trials; Pareto front within {budget:g} ms: {len(result.front)} configs in "
              f"{out_dir / 'pareto'}; best: trial {b.number}, {b.values[0]:.2f}% inherited top-1 at "
              f"{session.table.describe_ms(best, b.values[1])}")
    for row in found.best_per_target:
        print(f"  {row['target_ms']:g} ms: " + (f"trial {row['trial']}, {row['inherited_top1']:.2f}% at "
                                                f"{row['predicted_ms']:.3f} ms" if row["config"] else
                                                "no member of the front is this fast"))
    print(f"trials: {out_dir / 'trials.csv'}  plot: {out_dir / 'pareto.png'}")
    return found.written[-1]


def _show_parser(sub) -> None:
    sh = sub.add_parser("show", help="params, MACs, predicted latency and blocks of an ArchConfig; "
                        "α of a supernet (run directory or supernet.pt)")
    sh.add_argument("config", help="ArchConfig YAML, or a supernet run directory / checkpoint")
    sh.add_argument("--device", default=None, help="only this device's tables")
    sh.add_argument("--breakdown", action="store_true",
                    help="where the milliseconds go on --device: per stage and per kind of op, printed and drawn")
    sh.add_argument("--compare", nargs="+", default=[], metavar="OTHER",
                    help="with --breakdown: other ArchConfigs beside it (e.g. a published variant's YAML)")
    sh.add_argument("--png", default=None, help="with --breakdown: the figure's path "
                                                "(default: CONFIG.DEVICE.breakdown.png next to the config)")
    _common(sh)
    sh.set_defaults(func=cmd_show)


def cmd_show(args) -> None:
    from nas.report import reachable_range, show, show_supernet

    target = Path(args.config)
    if args.breakdown or args.compare:
        from nas.report import show_breakdown

        if not args.device:
            raise UserError("--breakdown: say which device's table to split (--device iphone12, cpu, xnnpack, ...)")
        if target.is_dir() or target.suffix == ".pt":
            raise UserError(f"--breakdown: {target} is a supernet; give an ArchConfig YAML (one `nas slim` wrote, "
                            "or a published variant)")
        print(show_breakdown([args.config, *args.compare], _tables_dir(args), args.device, args.png,
                             progress=not args.no_progress)[0])
        return
    if target.is_dir() or target.suffix == ".pt":
        print(show_supernet(target))
        if args.device:
            print(reachable_range(target, args.device, _tables_dir(args), progress=not args.no_progress))
    else:
        print(show(args.config, _tables_dir(args), args.device))


def _export_parser(sub) -> None:
    e = sub.add_parser("export", help="reparameterize a trained model (or an ArchConfig) and export it to ONNX / "
                       "Core ML / ExecuTorch, verified")
    e.add_argument("config", help="a model checkpoint (`nas train`'s model.pt, slim's inherited .pt), or an ArchConfig "
                   "YAML (e.g. one `nas slim` wrote, or a published variant)")
    e.add_argument("--format", choices=["onnx", "coreml", "pte", "all"], default="all",
                   help="pte: ExecuTorch with XNNPACK (Android, embedded); all: every format, pte where ExecuTorch "
                        "is installed (default: %(default)s)")
    e.add_argument("--resolution", type=int, default=None,
                   help="input resolution (default: the config's; a checkpoint's training resolution)")
    e.add_argument("--weights", default=None, help="with a YAML: state dict of the config's model (default: random init)")
    e.add_argument("--no-ema", action="store_true", help="with a checkpoint: the raw weights, not the EMA ones")
    e.add_argument("--val-images", type=int, default=1000,
                   help="with a checkpoint: validation images on which ONNX Runtime's top-1 must equal torch's")
    e.add_argument("--out", default=None, help="output path without suffix (default: next to the input)")
    e.set_defaults(func=cmd_export)


def cmd_export(args) -> list:
    from nas import export
    from supernets.config import ArchConfig

    if args.resolution is not None and (args.resolution <= 0 or args.resolution % 32):
        raise UserError(f"--resolution {args.resolution}: must be a positive multiple of 32")
    formats = export.all_formats() if args.format == "all" else [args.format]
    source = Path(args.config)
    stem = Path(args.out) if args.out else source.with_suffix("")
    if args.out is None and args.resolution:
        stem = stem.with_name(f"{stem.name}@{args.resolution}")
    if source.suffix == ".pt":
        done = export.export_trained(source, formats, stem, resolution=args.resolution, ema=not args.no_ema,
                                     val_images=args.val_images, log=_say)
    else:
        cfg = ArchConfig.load(args.config)
        if args.resolution:
            cfg = cfg.replace(resolution=args.resolution)
        done = export.export(cfg, formats, stem, weights=args.weights)
    for e in done:
        runtime = {"onnx": "onnxruntime", "pte": "ExecuTorch"}.get(e.format, e.format)
        check = (f"{runtime} max relative diff {e.max_rel_diff:.1e}" if e.max_rel_diff is not None
                 else "converted and saved (Core ML runs on macOS only)")
        if e.top1 is not None:
            check += f"; top-1 on the validation subset: torch {e.top1[0]:.2f}%, {runtime} {e.top1[1]:.2f}%"
        if e.note:
            check += f"; {e.note}"
        print(f"{e.format}: {e.path}  ({check})")
    return done


def _train_parser(sub) -> None:
    tr = sub.add_parser("train", help="train one ArchConfig as a standalone model (from scratch or inherited weights)")
    tr.add_argument("config", nargs="?", default=None,
                    help="ArchConfig YAML (e.g. one `nas slim` wrote), or a trained model.pt to fine-tune (e.g. at "
                    "its deploy resolution with --img-size)")
    add_recipe_flags(tr, TrainRecipe)
    tr.add_argument("--name", default=None, help="output folder name (default: CONFIG-INIT)")
    tr.add_argument("--out", default=None, help="output folder (default: RUN/train/NAME next to the config's run)")
    tr.add_argument("--resume", metavar="OUT_DIR", default=None, help="continue the training in OUT_DIR")
    _common(tr, tables=False)
    tr.set_defaults(func=cmd_train)


def cmd_train(args):
    from nas.train_model import resume_training, train_config

    if args.resume:
        if args.config is not None:
            raise UserError("--resume continues the config recorded in the run; drop CONFIG")
        out_dir = Path(args.resume)
        result = resume_training(out_dir, progress=not args.no_progress, log=_say,
                                 **_resume_changes(args, "train", TrainRecipe))
    else:
        if args.config is None:
            raise UserError("give the ArchConfig YAML to train (e.g. one `nas slim` wrote), or --resume RUN_DIR")
        result = train_config(args.config, out_dir=args.out, runs_dir=args.runs, name=args.name,
                              progress=not args.no_progress, log=_say, **_recipe_fields(args, MODEL_RECIPE_FLAGS))
        out_dir = result.path.parent
    final = result.final
    ema = f", EMA {final['ema_top1']:.2f}%" if result.recipe.ema_decay else ""
    print(f"final top-1: raw {final['val_top1']:.2f}%{ema} (started at {result.history[0]['val_top1']:.2f}%)")
    print(f"model: {result.path}  metrics: {out_dir / 'metrics.csv'}  curves: {out_dir / 'curves.png'}")
    print(f"export it: nas export {result.path}")
    return result


def _eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="top-1/top-5, parameters and predicted latency of a trained model")
    ev.add_argument("model", help="model checkpoint (model.pt from `nas train`, or inherited weights from slim)")
    ev.add_argument("--data", default=None, help="default: the data it was trained on")
    ev.add_argument("--device", default="iphone12", help="latency table device")
    ev.add_argument("--compute", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to evaluate")
    ev.add_argument("--no-ema", action="store_true", help="the raw weights, not the EMA ones")
    _common(ev)
    ev.set_defaults(func=cmd_eval)


def cmd_eval(args) -> dict:
    from nas.train_model import evaluate_trained, finetune_hint

    r = evaluate_trained(args.model, device=args.device, tables_dir=_tables_dir(args), data=args.data,
                         ema=not args.no_ema, compute=args.compute, progress=not args.no_progress)
    print(f"{args.model} ({'EMA' if r['ema'] else 'raw'} weights) on {r['data']} val ({r['images']} images, "
          f"{r['img_size']} px): top-1 {r['top1']:.2f}%, top-5 {r['top5']:.2f}%")
    print(f"params: {r['params_train'] / 1e6:.3f} M (train form), {r['params_deploy'] / 1e6:.3f} M (deploy); "
          f"MACs: {r['macs'] / 1e9:.3f} G (at the deploy resolution, {r['resolution']} px)")
    print(f"latency on {args.device}@{r['resolution']}: {r['latency_ms']:.3f} ms predicted ({r['latency_trust']}; "
          f"{r['table']})")
    if r["latency_swish_note"]:
        print(f"  {r['latency_swish_note']}")
    if r["img_size"] != r["resolution"]:
        print(f"note: trained at {r['img_size']} px, priced at {r['resolution']} px; a model does not carry across "
              f"such a change: fine-tune it there before deploying ({finetune_hint(args.model, r['resolution'])})")
    return r


def _quickstart_parser(sub) -> None:
    q = sub.add_parser("quickstart", help="train-supernet -> lut build -> slim on the embedded defaults")
    q.add_argument("--epochs", type=int, default=Recipe.epochs)
    q.add_argument("--target-ms", type=float, default=None)
    q.add_argument("--target-fraction", type=float, default=0.6,
                   help="without --target-ms: this fraction of the full supernet's latency")
    _table_build_flags(q)
    _subset_flags(q)
    _common(q, tables=False)
    q.set_defaults(func=cmd_quickstart)


def cmd_quickstart(args) -> None:
    from nas.session import quickstart

    t0 = time.time()
    done = quickstart(args.runs, epochs=args.epochs, target_ms=args.target_ms, target_fraction=args.target_fraction,
                      rounds=args.rounds, calibration_samples=args.calibration_samples,
                      calib_images=args.calib_images, val_images=args.val_images,
                      progress=not args.no_progress, log=_say)
    _print_emitted(done.emitted, [done.target_ms])
    config = done.emitted.configs[-1]
    print()
    print(f"quickstart done in {time.time() - t0:.0f}s")
    print(f"  supernet       {done.supernet}")
    print(f"  latency table  {done.table}")
    print(f"  slimmed config {config}")
    print(f"  inspect it     nas show {config}")


# ---------------------------------------------------------------------------- parser
def _build_parser() -> argparse.ArgumentParser:
    """Each command's flags are declared by its ``_*_parser`` beside its handler."""
    p = argparse.ArgumentParser(prog="nas", description="Supernet training, latency tables and latency-driven "
                                "slimming for efficient vision transformers.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_supernet_parser(sub)
    lut = sub.add_parser("lut", help="latency lookup tables")
    lut_sub = lut.add_subparsers(dest="lut_command", required=True, metavar="LUT_COMMAND")
    for add in (_lut_build_parser, _lut_export_parser, _lut_import_parser, _lut_devices_parser,
                _lut_estimate_parser, _lut_estimate_model_parser, _lut_validate_parser):
        add(lut_sub)
    for add in (_slim_parser, _search_parser, _show_parser, _export_parser, _train_parser, _eval_parser,
                _quickstart_parser):
        add(sub)
    return p


def _parse(argv: list[str]) -> argparse.Namespace:
    return _build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    args = _parse(sys.argv[1:] if argv is None else argv)
    from nas.core import io

    try:
        args.func(args)
    except ParameterError as e:   # a library parameter, said as the flag that sets it
        print(f"nas: error: {e.as_flag(FLAG_OF_PARAMETER)}", file=sys.stderr)
        return 2
    except UserError as e:        # every error a user can cause (nas.core.errors)
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
