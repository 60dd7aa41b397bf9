"""Run folders: a failed start leaves nothing that passes for a run."""
import pytest

from nas import runs


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    for folder in (tmp_path / "new", kept):
        with pytest.raises(RuntimeError), runs.removed_if_stillborn(folder):
            folder.mkdir(exist_ok=True)
            (folder / "run.yaml").write_text("complete: false\n")
            raise RuntimeError("disk full")
    assert not (tmp_path / "new").exists() and (kept / "run.yaml").is_file()   # a folder that existed stays
    with pytest.raises(RuntimeError), runs.removed_if_stillborn(tmp_path / "ckpt"):
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "model.pt").write_bytes(b"")
        raise RuntimeError("killed after epoch 1")
    assert (tmp_path / "ckpt" / "model.pt").is_file()                            # resumable: kept
