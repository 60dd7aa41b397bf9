"""Atomic writes: all or nothing, with the permissions a plain write would give."""
import os

import pytest

from nas.core import io


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


def test_a_full_disk_is_one_write_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import torch

    def full(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(tmp_path), "write_text", full)
    with pytest.raises(io.WriteError) as e:
        io.write_yaml(tmp_path / "t.yaml", {"a": 1})
    assert str(e.value).startswith(f"cannot write {tmp_path / 't.yaml'}: no space left on the device; free space")
    monkeypatch.undo()
    # torch's zip writer reports a full disk as a RuntimeError; only a (nearly) full device makes it a WriteError
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("unexpected pos 10 vs 8")))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        io.atomic_write(tmp_path / "w.pt", lambda p: torch.save({}, p))
    monkeypatch.setattr(io, "_disk_full", lambda folder: True)
    with pytest.raises(io.WriteError, match="w.pt: no space left"):
        io.atomic_write(tmp_path / "w.pt", lambda p: torch.save({}, p))
    assert list(tmp_path.iterdir()) == []


def test_png_figure_is_written_whole_or_not_at_all(tmp_path):
    with io.png_figure(tmp_path / "plot.png", 1, 2) as (fig, axes):
        axes[0].plot([0, 1], [1, 0])
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(RuntimeError):
        with io.png_figure(tmp_path / "sub" / "failed.png") as (fig, ax):
            raise RuntimeError("the plotting code failed")
    assert not (tmp_path / "sub").exists()   # no file, no folder made for it
