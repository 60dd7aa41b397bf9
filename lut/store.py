"""The table store: a device's latency table found, opened for adding to, and priced with.

Tables live in two places: the user's tables directory (``--tables``, default ``runs/tables``)
and the tables shipped in the package (``lut/tables``). A user's table shadows a shipped one of
the same name, and a table `nas` adds ops to is always written to the user's directory, never
into the package. How a device's missing ops are filled is what its backend and device declare
(``lut.backends.Backend.on_this_host``, ``lut.devices.Device.estimated_as``): timed here, or
estimated with the Core ML cost model; a device that can do neither needs a complete table
(imported from on-device timings).

The CLI, the experiments and the tests all open tables through here.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Iterable

from lut import build, estimate, published
from lut.devices import Device, find_table, get_device, table_path
from lut.pte import PteError
from lut.table import LatencyTable, TableError
from nas.core.errors import ParameterError
from supernets.registry import OpNode

PathLike = str | os.PathLike


def open_table(device_name: str, resolution: int, tables_dir: PathLike, create: bool) -> tuple[Device, LatencyTable]:
    """The device's table at `resolution` (the user's, else the shipped one). With `create`, a
    device that can fill a table here gets a new, empty one when there is none; the tables it may
    add to are written to `tables_dir`."""
    tables_dir = Path(tables_dir)
    device = get_device(device_name, tables_dir)
    found = find_table(device_name, resolution, tables_dir)
    if found is None:
        if not (create and device.fills_here):
            how = (f"build one with `nas lut build --device {device_name}`" if device.measurable else
                   f"import on-device timings (`nas lut export` / `nas lut import`); {device.unavailable_reason}")
            raise TableError(f"no latency table for {device_name}@{resolution} (looked in {tables_dir} and the "
                             f"shipped tables); {how}")
        table = build.new_table(device_name, resolution, device.threads, device.backend, not device.timed_here)
        table.path = table_path(device_name, resolution, tables_dir)
        return device, table
    table = LatencyTable.load(found, device=device_name, resolution=resolution)
    if build.table_backend(table) != device.backend:
        raise TableError(f"{found} was measured with backend {build.table_backend(table)}, but device {device_name} "
                         f"uses {device.backend}; move the table away or rebuild it with `nas lut build`")
    if device.fills_here and found.parent.resolve() != tables_dir.resolve():
        table.path = table_path(device_name, resolution, tables_dir)  # never write into the package
    return device, table


def user_copy(device: Device, resolution: int, tables_dir: PathLike) -> LatencyTable:
    """The device's table to add entries to by hand (imported or estimated): the existing one
    (the user's, else the shipped one), else a new one; saved to `tables_dir` in either case."""
    found = find_table(device.name, resolution, tables_dir)
    table = (LatencyTable.load(found, device=device.name, resolution=resolution) if found else
             build.new_table(device.name, resolution, device.threads, device.backend, not device.timed_here))
    if build.table_backend(table) != device.backend:
        raise TableError(f"{found} holds {build.table_backend(table)} timings, but device {device.name} uses "
                         f"{device.backend}; move it away")
    table.path = table_path(device.name, resolution, tables_dir)
    return table


def provenance(table: LatencyTable) -> dict:
    """Which table priced a config: the file as used (the user's copy when ops were added to it
    on demand, else the file it was read from, shipped or not), its content hash, and how its
    entries were made."""
    used = Path(table.path) if table.path and Path(table.path).is_file() else table.loaded_from
    out = {"table": str(used) if used else "(in memory, not saved)"}
    if used:
        out["table_sha256"] = hashlib.sha256(Path(used).read_bytes()).hexdigest()[:16]
    if table.environment.get("estimated_by"):
        out["table_estimated_by"] = table.environment["estimated_by"]
    return out


def estimate_protocol(device: Device) -> str:
    """The published protocol `device`'s latencies are estimated as (refused for a device without one)."""
    if device.estimated_as is None:
        if device.measurable:
            raise TableError(f"device {device.name} is measured, not estimated; use `nas lut build --device {device.name}`")
        raise TableError(f"no published protocol to estimate {device.name} with (estimates exist for "
                         f"{', '.join(estimate.DEVICE_SOURCE)}); time its ops with `nas lut export` / `nas lut import`")
    return device.estimated_as


def cost_model(device: Device, tables_dir: PathLike) -> tuple[estimate.CostModel, str]:
    """The Core ML cost model to estimate `device`'s ops with (the user's refit in `tables_dir`,
    else the shipped one) and the published protocol the device is estimated as."""
    source = estimate_protocol(device)
    path = estimate.cost_model_path(tables_dir)
    try:
        model = estimate.CostModel.load(path)
    except (OSError, KeyError, ValueError) as e:
        raise TableError(f"{path}: unusable cost model ({e}); refit it with `nas lut estimate --refit`") from None
    return model, source


def refit_cost_model(tables_dir: PathLike, progress: bool = True) -> tuple[estimate.CostModel, Path]:
    """The cost model profiled and fitted anew on the published latencies, saved to `tables_dir`
    (where `cost_model` finds it from then on)."""
    from tqdm.auto import tqdm

    rows = published.calibration_rows()
    with tqdm(total=len({(r.model, r.resolution) for r in rows}), desc="profiling published models", unit="model",
              disable=not progress, leave=False) as bar:
        features = published.calibration_features(rows, progress=bar.update)
    model = published.fit_published(rows, features)
    return model, model.save(Path(tables_dir) / estimate.SHIPPED_MODEL.name)


def predictor(device: Device, table: LatencyTable, tables_dir: PathLike, progress: bool = True) -> build.Predictor:
    """Prices configs on `table`: a measurable device times the ops the table lacks, a device
    with an estimate protocol estimates them (and says so), others need a complete table."""
    def estimate_missing(table, ops):
        model, source = cost_model(device, tables_dir)
        print(f"estimating {len(ops)} op(s) {table.device}@{table.resolution} lacks with {model.version} "
              f"(saved to {table.path})", flush=True)
        estimate.estimate_ops(table, ops, model, source)
        estimate.describe_table(table, model, source)

    estimates = not device.measurable and device.estimated_as is not None
    return build.Predictor(table, device.measurable, threads=device.threads, progress=progress,
                           estimate=estimate_missing if estimates else None)


def open_predictor(device_name: str, resolution: int, tables_dir: PathLike,
                   progress: bool = True) -> tuple[LatencyTable, build.Predictor]:
    """The device's table at `resolution` (made when the device can fill one) and its predictor."""
    device, table = open_table(device_name, resolution, tables_dir, create=True)
    return table, predictor(device, table, tables_dir, progress)


def spaces_at(families: Iterable[str], resolution: int | None, device: Device | None,
              which: str = "all") -> dict[int, list]:
    """resolution -> the families' shipped spaces (``small|paper|all``) deployed there
    (`resolution`, else the device's default, else each space's own)."""
    import search_spaces
    from supernets.config import SearchSpace

    out: dict[int, list] = {}
    for fam in families:
        for name in search_spaces.shipped(which):
            space = SearchSpace.load(search_spaces.space_path(fam, name))
            res = resolution or (device.resolution if device else None) or space.resolution
            out.setdefault(res, []).append(space.replace(resolution=res))
    return out


def spaces_at_one(families: list[str], resolution: int | None, device: Device,
                  which: str = "all") -> tuple[int, list]:
    """`spaces_at` for a caller that fills one table: the one resolution the spaces deploy at
    (a `ParameterError` naming `resolution` when they deploy at several and none was given)."""
    by_res = spaces_at(families, resolution, device, which)
    if len(by_res) > 1:
        raise ParameterError("resolution", resolution, f"the spaces of {', '.join(families)} deploy at "
                                                       f"{sorted(by_res)} px; say which table")
    (res, spaces), = by_res.items()
    return res, spaces


def ops_of(spaces: Iterable, num_classes: int) -> dict[str, OpNode]:
    """Every op key the spaces can need."""
    ops: dict[str, OpNode] = {}
    for space in spaces:
        ops.update(build.space_ops(space, num_classes))
    return ops


def variant_ops(families: Iterable[str], resolution: int) -> dict[str, OpNode]:
    """Every op key of the families' published variants deployed at `resolution`."""
    import search_spaces
    from supernets.config import ArchConfig

    configs = [ArchConfig.load(search_spaces.variant_path(f, v)).replace(resolution=resolution)
               for f in families for v in search_spaces.variant_names(f)]
    return build.ops_for(configs)




def not_measured(device: Device, resolution: int, tables_dir: PathLike, ops: dict[str, OpNode]) -> dict[str, OpNode]:
    """The ops `device`'s table has no timing of (estimated entries count as missing: timings
    replace them)."""
    found = find_table(device.name, resolution, tables_dir)
    entries = LatencyTable.load(found, device=device.name, resolution=resolution).entries if found else {}
    measured = {k for k, e in entries.items() if e.get("source") == "measured"}
    return {k: op for k, op in ops.items() if k not in measured}


def coverage(table: LatencyTable, families: Iterable[str], space: str = "all", num_classes: int = 10,
             needed_ops: dict | None = None) -> dict[str, tuple[int, int]]:
    """family -> (ops of its shipped spaces `table` holds, ops they can need), at the table's resolution.
    `needed_ops`, a dict the caller keeps, holds each family's needs across calls: listing a space's
    ops is the slow part, and tables of one resolution need the same ones."""
    needed_ops = {} if needed_ops is None else needed_ops
    out = {}
    for fam in families:
        key = (fam, table.resolution, space, num_classes)
        if key not in needed_ops:
            spaces = spaces_at([fam], table.resolution, None, space)[table.resolution]
            needed_ops[key] = set(ops_of(spaces, num_classes))
        needed = needed_ops[key]
        out[fam] = (len(needed & set(table.entries)), len(needed))
    return out


class BuildBusy(TableError):
    """Another `nas lut build` is timing on this machine."""


@contextlib.contextmanager
def measuring_alone():
    """One `nas lut build` per machine at a time: two would time their ops against each other's
    load (calibration error 2 % -> 40 %), so a second one is refused, not queued."""
    from filelock import FileLock, Timeout

    lock = FileLock(os.path.join(tempfile.gettempdir(), "nas-lut-build.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BuildBusy("another `nas lut build` is measuring on this machine; two at once would time each other's "
                        "load: wait for it to finish, then run this one") from None
    try:
        yield
    finally:
        lock.release()


def check_timing(rounds: int, calibration_samples: int | None = None) -> None:
    """A table build's (`calibration_samples` given) or a validation's timing options."""
    if rounds < 1:
        raise ParameterError("rounds", rounds, "need at least 1 timing round (default 7)")
    if calibration_samples is not None and calibration_samples < 2:
        raise ParameterError("calibration_samples", calibration_samples, "need at least 2 networks to fit the "
                                                                         "table's cache blend (default 12)")


def build_tables(device_name: str, families: list[str], *, space: str = "all", resolution: int | None = None,
                 num_classes: int = 10, tables_dir: PathLike, rounds: int = 7, calibration_samples: int = 12,
                 recalibrate: bool = False, progress: bool = True, log=print) -> list[Path]:
    """Time every op the families' shipped spaces (`space`: small, paper or all) can need on a
    device measurable here, at each resolution they deploy at, and fit each table's cache blend
    on random networks timed whole. Ops a table holds already are kept (a re-run resumes); the
    blend is refitted when ops were added, or with `recalibrate`, and fitted for a family the
    table has none of. Returns the tables written."""
    check_timing(rounds, calibration_samples)
    tables_dir = Path(tables_dir)
    paths = []
    device = get_device(device_name, tables_dir)
    if not device.measurable:   # said before waiting for another build to finish
        raise TableError(f"device {device_name} cannot be measured on this machine ({device.unavailable_reason})")
    with measuring_alone():
        by_res = spaces_at(families, resolution, device, space)
        for res, spaces in by_res.items():
            ops = ops_of(spaces, num_classes)
            device, table = open_table(device_name, res, tables_dir, create=True)
            table.environment.update(build.new_table(device_name, res, device.threads, device.backend).environment)
            todo = [k for k in ops if k not in table]
            log(f"{device_name}@{res}: {len(ops)} ops in the space, {len(ops) - len(todo)} already in "
                  f"{table.path}, measuring {len(todo)}")
            t0 = time.time()
            # each family's networks are priced by a blend fitted on its own (`lut.table`): refit
            # every family when ops were added, else those the table has no calibration of
            calibrated = table.environment.get("calibrations") or {}
            to_fit = spaces if todo or recalibrate else [sp for sp in spaces if sp.family not in calibrated]
            if to_fit:
                try:
                    cal = build.calibrate(table, to_fit, num_classes, ops=ops, samples=calibration_samples,
                                          threads=device.threads, rounds=rounds, progress=progress)
                except PteError as e:   # an op ExecuTorch cannot take: say whose space it is in
                    key = e.subject.removeprefix("op ")
                    owner = next((sp.family for sp in spaces if key in build.space_ops(sp, num_classes)), None)
                    if owner is None:
                        raise
                    raise PteError(f"{owner}'s {e}", e.subject) from None
                for family, fam_cal in cal.items():
                    errs = sorted(abs(e) for e in fam_cal.errors_pct)
                    m = fam_cal.cache_model
                    boundary = (f", {1e3 * m.boundary_ms_per_mb:.0f} µs per MB an op converts alone"
                                if m.boundary_ms_per_mb else "")
                    log(f"{family}: calibrated on {len(errs)} networks timed with the ops: cache blend "
                        f"{m.base:.3f} {m.slope:+.3f}*ln(weights/MiB){boundary}, "
                        f"median |err| {errs[len(errs) // 2]:.1f}%, max {errs[-1]:.1f}%")
            warning = build.noisy_calibration_warning(table)
            if warning:
                log(warning)
            table.save()
            log(f"table: {table.path} ({len(table.entries)} entries, {time.time() - t0:.0f}s)")
            paths.append(table.path)
    return paths


def estimate_tables(device_name: str, families: list[str], *, resolutions: Iterable[int], space: str = "all",
                    num_classes: Iterable[int] = (10,), tables_dir: PathLike, refit: bool = False, redo: bool = True,
                    progress: bool = True, log=print) -> list[Path]:
    """Estimate with the cost model (`refit`: fitted anew on the published latencies first) every
    op the families' spaces and published variants need at each resolution, into the user's
    copy of the device's table. `redo` False keeps the ops the table holds."""
    from tqdm.auto import tqdm

    tables_dir = Path(tables_dir)
    device = get_device(device_name, tables_dir)
    source = estimate_protocol(device)
    if refit:
        model, path = refit_cost_model(tables_dir, progress=progress)
        log(f"fitted {model.version} on {model.fitted_on['rows']} published latencies of "
            f"{model.fitted_on['models']} models (in-sample median error "
            f"{model.fitted_on['in_sample_median_ape_pct']}%); saved {path}")
    else:
        model, source = cost_model(device, tables_dir)
    written = []
    for res in resolutions:
        _, spaces = spaces_at_one(families, res, device, space)
        ops: dict[str, OpNode] = {}
        for n in num_classes:
            ops.update(ops_of(spaces, n))
        ops.update(variant_ops(families, res))   # so published variants can be priced next to searched ones
        table = user_copy(device, res, tables_dir)
        bar = tqdm(total=len(ops), desc=f"{device_name}@{res}", unit="op", disable=not progress, leave=False)
        try:
            added = estimate.estimate_ops(table, ops, model, source, progress=bar.update, redo=redo)
        finally:
            bar.close()
        estimate.describe_table(table, model, source)
        written.append(table.save())
        log(f"{table.path}: {added} ops estimated ({len(ops)} in the spaces of {', '.join(families)}; "
            f"{len(table.entries)} entries), {model.version} as {source}, call overhead {table.overhead_ms:.3f} ms")
    return written


def export_for_timing(device_name: str, families: list[str], *, out_dir: PathLike | None = None,
                      runs_dir: PathLike = "runs", space: str = "all", resolution: int | None = None,
                      num_classes: int = 10, tables_dir: PathLike, progress: bool = True, log=print) -> Path:
    """For a device timed elsewhere (its backend declares an exporter, e.g. Core ML's): write one
    package per op its table lacks, with the manifest that `import_timings` reads back. Packages
    already written are kept (a re-run continues). Returns the manifest."""
    import importlib

    from tqdm.auto import tqdm


    tables_dir = Path(tables_dir)
    device = get_device(device_name, tables_dir)
    if device.exporter is None:
        raise TableError(f"device {device_name} is measured here ({device.backend}); use `nas lut build --device "
                         f"{device_name}` (lut export is for devices timed elsewhere, such as Core ML's)")
    exporter = importlib.import_module(device.exporter)
    res, spaces = spaces_at_one(families, resolution, device, space)
    ops = ops_of(spaces, num_classes)
    todo = not_measured(device, res, tables_dir, ops)
    out = Path(out_dir) if out_dir else Path(runs_dir) / exporter.FOLDER / f"{device_name}@{res}"
    log(f"{device_name}@{res}: {len(ops)} ops in the space, {len(ops) - len(todo)} already measured, "
        f"exporting {len(todo)} {exporter.EXPORTS} to {out}")
    bar = tqdm(total=len(todo), desc="converting", unit="op", disable=not progress, leave=False)
    try:
        result = exporter.export_ops(todo, out, device, res, progress=bar.update)
    except Exception as e:  # noqa: BLE001 - torch.export/coremltools raise many types
        raise TableError(f"{device.backend} conversion failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                         "packages written so far are kept, re-run to continue") from None
    finally:
        bar.close()
    log(f"wrote {result.written} {exporter.EXPORTS} ({result.skipped} already there) and {result.manifest}")
    log(f"time them on the device ({exporter.how_to_time(out)}), then: "
        f"nas lut import {out / 'timings.csv'} --device {device_name}")
    return result.manifest


def import_timings(timings: PathLike, device_name: str, *, space: str = "all", resolution: int | None = None,
                   num_classes: int = 10, tables_dir: PathLike) -> tuple[LatencyTable, int]:
    """Read the timings measured on the device (by package file or op key; `lut.apple`) into the
    user's copy of its table. Returns the saved table and how many timings it took."""
    from lut import ondevice
    from supernets.registry import family_names

    tables_dir, timings = Path(tables_dir), Path(timings)
    device = get_device(device_name, tables_dir)
    res, spaces = spaces_at_one(family_names(), resolution, device, space)
    known = set(ops_of(spaces, num_classes))
    try:
        read = ondevice.read_timings(timings, known)
    except ondevice.TimingsError as e:
        raise TableError(str(e)) from None
    table = user_copy(device, res, tables_dir)
    n = ondevice.import_timings(table, read, timings.name)
    table.save()
    return table, n


def validate_tables(device_name: str, families: list[str], *, space: str = "small", resolution: int | None = None,
                    num_classes: int = 10, samples: int = 30, seed: int = 1, rounds: int = 7, tables_dir: PathLike,
                    out_dir: PathLike | None = None, runs_dir: PathLike = "runs", progress: bool = True,
                    log=print) -> list[Path]:
    """Predicted against measured latency of `samples` random configs of each family's shipped
    `space`, on a device measurable here: ``validation.csv`` and ``scatter.png`` per family in
    `out_dir` (a sub-folder per family when there are several), else
    ``runs_dir/validate/DEVICE@RES-FAMILY``."""
    from lut import validate

    if samples < 2:
        raise ParameterError("samples", samples, "need at least 2 configs to report an error distribution")
    check_timing(rounds)
    tables_dir = Path(tables_dir)
    written = []
    for fam in families:
        _, (space_,) = spaces_at_one([fam], resolution, get_device(device_name, tables_dir), space)
        device, table = open_table(device_name, space_.resolution, tables_dir, create=False)
        if not device.measurable:
            raise TableError(f"device {device_name} cannot be measured on this machine, so its table cannot be "
                             "validated here")
        predict = build.Predictor(table, True, threads=device.threads, progress=progress)
        log(f"validating {table.path} on {samples} random {fam} configs")
        result = validate.validate(table, space_, num_classes, samples=samples, seed=seed, threads=device.threads,
                                   rounds=rounds, predictor=predict, progress=progress)
        if out_dir is None:
            out = Path(runs_dir) / "validate" / f"{device_name}@{space_.resolution}-{fam}"
        else:
            out = Path(out_dir) / fam if len(families) > 1 else Path(out_dir)
        written += validate.write(result, out, f"{fam} @ {device_name}{space_.resolution}, {device.threads} thread(s)")
        log(f"{fam}: {result.summary()}")
        warning = build.noisy_calibration_warning(table)
        if warning:
            log(warning)
        log(f"  wrote {out / 'validation.csv'} and {out / 'scatter.png'}")
    return written
