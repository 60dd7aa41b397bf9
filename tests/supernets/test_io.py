"""Atomic writes: all or nothing, with the permissions a plain write would give."""
import os

import pytest

from supernets import io


def test_an_atomic_write_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = io.write_text(tmp_path / "a.yaml", "x: 1\n")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644   # not mkstemp's 0600: a team sharing runs/ can read it


def test_a_failed_write_leaves_nothing_and_stale_temps_are_cleaned(tmp_path):
    def broken(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.atomic_write(tmp_path / "model.pt", broken)
    assert list(tmp_path.iterdir()) == []
    stale = tmp_path / ".model.pt.k3j2.tmp"      # what a SIGKILL mid-write leaves
    stale.write_text("half")
    (tmp_path / ".other.pt.x.tmp").write_text("not ours to clean")
    assert io.remove_stale_temps(tmp_path / "model.pt") == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.x.tmp"]
