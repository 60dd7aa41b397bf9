"""Device registry: where a device's latencies come from and where its tables live.

``cpu`` is measured here (torch eager, fixed threads). Apple devices cannot be measured on
Linux: their tables are shipped (estimated) or imported from on-device timings.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SHIPPED_TABLES = Path(__file__).resolve().parent / "tables"


@dataclass(frozen=True)
class Device:
    name: str
    measurable: bool          # can `nas` time ops for this device on this machine?
    threads: int = 1
    description: str = ""


DEVICES = {
    "cpu": Device("cpu", True, 1, "this machine's CPU, torch eager, 1 thread"),
    "iphone12": Device("iphone12", False, description="Apple A14, Core ML (tables shipped or imported)"),
    "iphone13": Device("iphone13", False, description="Apple A15, Core ML (tables shipped or imported)"),
}


class DeviceError(ValueError):
    pass


def get_device(name: str) -> Device:
    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r} (known: {', '.join(sorted(DEVICES))})")
    return DEVICES[name]


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
