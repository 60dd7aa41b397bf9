import os
import subprocess
import sys

import pytest
import torch

from nas import checkpoint
from nas.supernet_training import Recipe
from tests.conftest import kill_during_second_epoch


def test_checkpoint_holds_everything_and_loads_safely(tiny_run):
    ckpt = checkpoint.load(tiny_run)  # torch.load(weights_only=True) inside
    for key in ("state_dict", "optimizer", "rng", "space", "recipe", "alpha", "history", "epoch"):
        assert key in ckpt
    assert ckpt["epoch"] == 1 and ckpt["history"][0]["val_acc"] > 10  # better than chance on 10 classes
    net = checkpoint.build_supernet(ckpt)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in ckpt["state_dict"].items())


def test_tau_schedule_is_exponential():
    r = Recipe(epochs=5, tau_max=5.0, tau_min=0.5)
    taus = [r.tau(e) for e in range(5)]
    assert taus[0] == 5.0 and abs(taus[-1] - 0.5) < 1e-12
    assert all(abs(b / a - taus[1] / taus[0]) < 1e-9 for a, b in zip(taus, taus[1:]))


def _train_cmd(runs, name, space, *extra):
    return [sys.executable, "-m", "nas.cli", "train-supernet", "--space", str(space), "--img-size", "32",
            "--epochs", "3", "--batch-size", "32", "--threads", "1", "--runs", str(runs), "--name", name, "--no-progress", *extra]


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(tmp_path, tiny_space_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ckpt = tmp_path / "killed" / "supernet.pt"
    kill_during_second_epoch(_train_cmd(tmp_path, "killed", tiny_space_path), ckpt,
                             beside=_train_cmd(tmp_path, "straight", tiny_space_path))
    interrupted = checkpoint.load(ckpt)
    assert interrupted["epoch"] < 3, "the run finished before it could be killed"

    subprocess.run([sys.executable, "-m", "nas.cli", "train-supernet", "--resume", str(tmp_path / "killed"),
                    "--threads", "1", "--no-progress"], check=True, env=env, capture_output=True)
    a = checkpoint.load(tmp_path / "straight" / "supernet.pt")
    b = checkpoint.load(ckpt)
    assert b["epoch"] == 3
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    for name, alpha in a["alpha"].items():
        assert torch.equal(alpha, b["alpha"][name]), name


@pytest.mark.slow
def test_training_without_a_ray_address_never_imports_ray(tiny_space_path, tmp_path):
    """A laptop with no Ray started: single-process training must not touch Ray at all."""
    import subprocess
    import sys

    code = ("import sys\nfrom nas.cli import main\n"
            f"assert main(['train-supernet', '--space', {str(tiny_space_path)!r}, '--img-size', '32', '--epochs', '1', "
            f"'--batch-size', '128', '--runs', {str(tmp_path)!r}, '--no-progress']) == 0\n"
            "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_every_familys_supernet_in_one_command_resumes_per_family(tmp_path, capsys, few_digits):
    from nas.cli import main
    from supernets.registry import family_names

    argv = ["train-supernet", "--family", "all", "--name", "every", "--img-size", "32", "--epochs", "1",
            "--batch-size", "128", "--runs", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    for family in family_names():
        ckpt = checkpoint.load(tmp_path / f"every-{family}" / "supernet.pt")
        assert ckpt["space"]["family"] == family and ckpt["epoch"] == 1
        assert ckpt["recipe"]["space"] == "small" and ckpt["recipe"]["train_widths"]     # the defaults
    # a crash inside one family: its checkpoint survives, the same command finishes it and skips the rest
    info = tmp_path / "every-iformer" / "run.yaml"
    info.write_text(info.read_text().replace("complete: true", "complete: false"))
    capsys.readouterr()
    assert main(argv + ["--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("done already") == len(family_names()) - 1 and "resuming" in out
    assert checkpoint.load(tmp_path / "every-iformer" / "supernet.pt")["epoch"] == 2


def test_family_all_takes_a_shipped_space_name_not_a_file(tmp_path, capsys):
    from nas.cli import main

    assert main(["train-supernet", "--family", "all", "--space", str(tmp_path / "mine.yaml"), "--runs",
                 str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--space paper|small" in err and "give one --family" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, blamed", [
    (["--batch-size", "0"], "--batch-size 0 must be >= 1"),
    (["--lr", "nan"], "--lr nan must be a finite number > 0"),
    (["--threads", "0"], "--threads 0 must be >= 1"),
    (["--tau-min", "0"], "--tau-min 0.0 must be a finite number > 0"),
    (["--tau-min", "9"], "--tau-min 9.0 exceeds --tau-max 5.0"),
    (["--img-size", "48"], "--img-size 48 is not a positive multiple of 32"),
    (["--arch-lr", "-1"], "--arch-lr -1.0 must be a finite number > 0"),
])
def test_a_bad_training_flag_is_one_line_naming_it_and_writes_nothing(flags, blamed, tmp_path, capsys):
    from nas.cli import main

    assert main(["train-supernet", "--runs", str(tmp_path), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and blamed in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_library_recipe_with_an_unknown_mixing_mode_names_the_modes():
    from nas.errors import UserError
    from nas.train import supernet_recipe

    with pytest.raises(UserError, match="--mixing gumbel is not a mixing mode: give one of soft, hard, uniform"):
        supernet_recipe(mixing="gumbel")


def test_train_or_resume_skips_a_finished_run_and_resumes_an_interrupted_one(tiny_run, tmp_path, monkeypatch):
    import shutil

    from nas import checkpoint, runs, train
    from nas.errors import RecipeChangeError

    recipe = train.Recipe.from_dict(checkpoint.load(tiny_run)["recipe"])
    logged = []
    assert train.train_or_resume(recipe, tiny_run.parent, log=logged.append) == tiny_run   # finished: nothing runs
    assert logged == [f"efficientformer: done already ({tiny_run})"]
    run_dir = tmp_path / "interrupted"
    shutil.copytree(tiny_run.parent, run_dir)
    info = run_dir / runs.RUN_INFO
    info.write_text(info.read_text().replace("complete: true", "complete: false"))
    assert not runs.read_info(run_dir).get("complete")
    calls = []
    monkeypatch.setattr(train, "train_supernet_run", lambda r, d, **kw: calls.append((r, d, kw)) or d / runs.SUPERNET)
    train.train_or_resume(recipe.__class__.from_dict({**recipe.to_dict(), "epochs": 3, "threads": 1}), run_dir,
                          progress=False)
    (resumed, where, options), = calls
    assert where == run_dir and options["resume"] and resumed.epochs == 3 and resumed.lr == recipe.lr
    with pytest.raises(RecipeChangeError, match="lr 0.5 differs"):   # another experiment, not a resume
        train.train_or_resume(recipe.__class__.from_dict({**recipe.to_dict(), "lr": 0.5}), run_dir)
    fresh = tmp_path / "fresh"
    train.train_or_resume(recipe, fresh)
    assert calls[-1][1] == fresh and not calls[-1][2].get("resume")
