"""Device registry: where a device's latencies come from and where its tables live.

A device is a name for one measurement setup: a backend (``lut.backends``), a thread count and
optionally the resolution its tables default to. Built in:

* ``cpu``: torch eager on this machine's CPU, 1 thread;
* ``cuda``: torch eager on this machine's GPU (CUDA events), when torch sees one;
* ``onnxruntime``: ONNX Runtime's CPU execution provider, 1 thread;
* ``xnnpack``: ExecuTorch with XNNPACK on this machine's CPU, 1 thread (``lut.pte``; needs the
  ``executorch`` extra);
* ``iphone12`` / ``iphone13``: Core ML on an Apple A14 / A15. These cannot be measured here:
  their tables are shipped (estimated) or imported from on-device timings.

User devices come from ``devices.yaml`` in the tables directory, e.g.::

    devices:
      - {name: ort-4t, backend: onnxruntime, threads: 4}
      - {name: iphone15, backend: coreml, resolution: 256, description: A17 Pro, timings imported}
      - {name: pixel8, backend: executorch, threads: 4, resolution: 224, description: Tensor G3}

A device whose backend exports for the device (``executorch``, ``coreml``) is timed *on the
device* (``nas lut export``, run the script there, ``nas lut import``); ``timed: here`` makes an
ExecuTorch device one of this machine (e.g. ``{name: xnnpack-2t, backend: executorch, threads: 2,
timed: here}``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from lut.backends import BACKENDS, get_backend
from nas.core import io
from nas.core.errors import UserError

SHIPPED_TABLES = Path(__file__).resolve().parent / "tables"
USER_DEVICES = "devices.yaml"


@dataclass(frozen=True)
class Device:
    name: str
    backend: str
    threads: int = 1
    resolution: int | None = None     # the resolution its tables default to (None: the space's)
    description: str = ""
    builtin: bool = True
    # the published protocol its latencies are estimated as (`lut.estimate`'s cost model); None:
    # no estimate, only timings (taken here, or on the device and imported)
    estimated_as: str | None = None
    # False: the device is elsewhere (a phone), its ops are exported, timed there and imported,
    # even when its backend could time on this machine (ExecuTorch)
    timed_here: bool = True

    @property
    def unavailable_reason(self) -> str | None:
        backend = get_backend(self.backend)
        if backend.on_this_host and not self.timed_here:
            return (f"{self.name} is timed on the device itself: `nas lut export --device {self.name}`, run the "
                    f"script it writes there, then `nas lut import`")
        return backend.available()

    @property
    def measurable(self) -> bool:
        """Can `nas` time ops for this device on this machine?"""
        return self.unavailable_reason is None

    @property
    def fills_here(self) -> bool:
        """Can `nas` add the ops a table lacks on this machine (timing them, or estimating them)?"""
        return self.measurable or self.estimated_as is not None

    @property
    def exporter(self) -> str | None:
        """The module that exports ops to time on the device (`nas lut export`), if its backend has one."""
        return get_backend(self.backend).exporter


BUILTIN = {
    "cpu": Device("cpu", "torch-eager", 1, description="this machine's CPU, torch eager, 1 thread"),
    "cuda": Device("cuda", "torch-cuda", 1, description="this machine's GPU, torch eager, CUDA events"),
    "onnxruntime": Device("onnxruntime", "onnxruntime", 1, description="ONNX Runtime CPU EP, 1 thread"),
    "xnnpack": Device("xnnpack", "executorch", 1, description="this machine's CPU, ExecuTorch with XNNPACK, 1 thread"),
    "iphone12": Device("iphone12", "coreml", description="Apple A14, Core ML (tables shipped or imported)",
                       estimated_as="A14 iOS16 ModelBench"),
    "iphone13": Device("iphone13", "coreml", description="Apple A15, Core ML (tables shipped or imported)",
                       estimated_as="A15 iFormer"),
}


class DeviceError(UserError, ValueError):
    """An unknown device, or a devices.yaml line that cannot be one."""


def user_devices(tables_dir: str | os.PathLike | None) -> dict[str, Device]:
    """Devices declared in ``<tables_dir>/devices.yaml`` (empty if there is no such file)."""
    if tables_dir is None:
        return {}
    path = Path(tables_dir) / USER_DEVICES
    if not path.is_file():
        return {}
    try:
        raw = io.read_yaml(path)
    except yaml.YAMLError as e:
        raise DeviceError(f"{path}: malformed YAML ({e.__class__.__name__}); fix or remove the file") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("devices"), list):
        raise DeviceError(f"{path}: expected a mapping with a 'devices' list, e.g. "
                          "devices: [{name: ort-4t, backend: onnxruntime, threads: 4}]")
    out = {}
    for i, d in enumerate(raw["devices"]):
        where = f"{path}: devices[{i}]"
        if not isinstance(d, dict):
            raise DeviceError(f"{where}: expected a mapping with name and backend")
        extra = set(d) - {"name", "backend", "threads", "resolution", "description", "timed"}
        if extra:
            raise DeviceError(f"{where}: unknown field(s) {', '.join(sorted(extra))} "
                              "(allowed: name, backend, threads, resolution, description, timed)")
        name, backend = d.get("name"), d.get("backend")
        if not isinstance(name, str) or not name or "@" in name or "/" in name:
            raise DeviceError(f"{where}.name: {name!r} is not a device name (no '@' or '/')")
        if name in BUILTIN or name in out:
            raise DeviceError(f"{where}.name: {name!r} is already a device; choose another name")
        if backend not in BACKENDS:
            raise DeviceError(f"{where}.backend: {backend!r} is not one of {', '.join(BACKENDS)}")
        threads, resolution = d.get("threads", 1), d.get("resolution")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise DeviceError(f"{where}.threads: {threads!r} is not a positive integer")
        if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                       or resolution < 32 or resolution % 32):
            raise DeviceError(f"{where}.resolution: {resolution!r} is not a positive multiple of 32")
        # a device whose backend exports for the device is that device (a phone) unless it says otherwise
        timed = d.get("timed", "device" if BACKENDS[backend].exporter else "here")
        if timed not in ("here", "device"):
            raise DeviceError(f"{where}.timed: {timed!r} is not 'here' (this machine) or 'device' (exported, timed "
                              "there, imported)")
        if timed == "here" and not BACKENDS[backend].on_this_host:
            raise DeviceError(f"{where}.timed: backend {backend} cannot time on this machine; use timed: device")
        out[name] = Device(name, backend, threads, resolution, str(d.get("description", "")), builtin=False,
                           timed_here=timed == "here")
    return out


def all_devices(tables_dir: str | os.PathLike | None = None) -> dict[str, Device]:
    return {**BUILTIN, **user_devices(tables_dir)}


def get_device(name: str, tables_dir: str | os.PathLike | None = None) -> Device:
    devices = all_devices(tables_dir)
    if name not in devices:
        where = Path(tables_dir) / USER_DEVICES if tables_dir is not None else f"{USER_DEVICES} in the tables directory"
        raise DeviceError(f"unknown device {name!r} (known: {', '.join(sorted(devices))}); declare your own in {where}")
    return devices[name]


def table_filename(device: str, resolution: int) -> str:
    return f"{device}@{resolution}.yaml"


def table_path(device: str, resolution: int, tables_dir: str | os.PathLike) -> Path:
    """Where a table is written (user tables dir)."""
    return Path(tables_dir) / table_filename(device, resolution)


def find_table(device: str, resolution: int, tables_dir: str | os.PathLike) -> Path | None:
    """The user's table if one exists, else the shipped one, else None."""
    for root in (Path(tables_dir), SHIPPED_TABLES):
        p = root / table_filename(device, resolution)
        if p.is_file():
            return p
    return None


def tables_of(device: str, tables_dir: str | os.PathLike) -> list[Path]:
    """Every table file of `device` (user tables first, then shipped ones it does not shadow)."""
    seen, out = set(), []
    for root in (Path(tables_dir), SHIPPED_TABLES):
        for p in sorted(root.glob(f"{device}@*.yaml")):
            if p.name not in seen:
                seen.add(p.name)
                out.append(p)
    return out
