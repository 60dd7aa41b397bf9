"""What every training run shares: resuming under the run's recipe (`nas.engine.RecipeBase`) and
the resumable-run skeleton (`nas.engine.ResumableRun`), which the supernet's training, `nas train`
and each Ray Train worker run on (their SIGKILL-resume and kill-a-worker tests drive it whole)."""
import pytest
import torch

from nas.errors import ParameterError, RecipeChangeError
from nas.supernet_training import Recipe
from nas.train_model import TrainRecipe


def test_a_resume_may_change_where_and_how_fast_but_not_what():
    recorded = TrainRecipe(lr=0.004, seed=1, epochs=3).to_dict()
    resumed = TrainRecipe.resumed(recorded, {"epochs": 5, "device": "cuda", "threads": 8, "lr": 0.004})
    assert (resumed.epochs, resumed.device, resumed.threads, resumed.lr, resumed.seed) == (5, "cuda", 8, 0.004, 1)
    with pytest.raises(RecipeChangeError) as e:
        TrainRecipe.resumed(recorded, {"label_smoothing": 0.2})
    assert e.value.parameter == "label_smoothing" and str(e.value).startswith("label_smoothing 0.2 differs from the "
                                                                               "run's 0.1")
    # the CLI names the flag that sets the field
    assert e.value.as_flag({"label_smoothing": "--smoothing"}).startswith(
        "--resume continues the run's recipe: --smoothing 0.2 differs from its 0.1; drop --smoothing")
    with pytest.raises(TypeError, match="no field 'arch_lr'"):   # a supernet field on a model recipe
        TrainRecipe.resumed(recorded, {"arch_lr": 0.1})


def test_a_recipe_written_before_a_field_existed_resumes_with_that_fields_old_default():
    old = {k: v for k, v in Recipe().to_dict().items() if k != "train_widths"}   # before width training
    assert Recipe.resumed(old, {"train_widths": False}).train_widths is False
    with pytest.raises(RecipeChangeError, match="train_widths True differs from the run's False"):
        Recipe.resumed(old, {"train_widths": True})


def test_a_parameter_left_unset_is_named_without_a_value():
    assert str(ParameterError("resolution", None, "the spaces deploy at [224, 256] px")) == \
        "give resolution: the spaces deploy at [224, 256] px"
    assert ParameterError("study_name", "x", "taken").as_flag({"study_name": "--study"}) == "--study x: taken"


def _run_three_epochs(run, model, optimizer, path, saves):
    """A toy run on the skeleton: each epoch one SGD step on noise, checkpointed as the trainings do."""
    from nas import checkpoint

    def train_one(epoch):
        loss = model(torch.randn(4, 3)).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return {"epoch": epoch + 1, "loss": float(loss.detach())}

    def save(epoch, history):
        saves.append(epoch)
        checkpoint.save(path, {"space": {}, "num_classes": 1, "img_size": 32, "recipe": Recipe().to_dict(),
                               "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "rng": checkpoint.rng_state(), "epoch": epoch + 1, "history": history})
        if epoch == 0 and "kill" in saves:
            raise KeyboardInterrupt   # killed after epoch 1's checkpoint

    return run.epochs(3, train_one, save)


def _toy(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def test_a_run_resumed_on_the_skeleton_ends_where_the_uninterrupted_one_does(tmp_path):
    from nas import checkpoint
    from nas.engine import ResumableRun

    recipe = Recipe(epochs=3)
    straight, killed = tmp_path / "a" / "supernet.pt", tmp_path / "b" / "supernet.pt"
    model, opt = _toy()
    torch.manual_seed(1)
    history = _run_three_epochs(ResumableRun.open(recipe, straight, resume=False, formats=(checkpoint.FORMAT,),
                                                  holds="a supernet"), model, opt, straight, saves := [])
    assert saves == [0, 1, 2] and [h["epoch"] for h in history] == [1, 2, 3]

    model, opt = _toy()
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        _run_three_epochs(ResumableRun.open(recipe, killed, resume=False, formats=(checkpoint.FORMAT,),
                                            holds="a supernet"), model, opt, killed, ["kill"])
    (killed.parent / ".supernet.pt.x1.tmp").write_bytes(b"half")       # as a kill mid-write leaves it
    model, opt = _toy(seed=5)                                           # rebuilt: other weights, other RNG
    run = ResumableRun.open(recipe, killed, resume=True, formats=(checkpoint.FORMAT,), holds="a supernet")
    assert not list(killed.parent.glob(".*.tmp")) and run.resuming and run.start_epoch == 1
    run.restore(state_dict=model, optimizer=opt, ema=None)             # an absent part is skipped
    resumed = _run_three_epochs(run, model, opt, killed, saves := [])
    assert saves == [1, 2] and [h["epoch"] for h in resumed] == [1, 2, 3]
    assert [h["loss"] for h in resumed] == [h["loss"] for h in history]
    a, b = (checkpoint.load(p) for p in (straight, killed))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_the_skeleton_refuses_to_start_over_a_run_or_resume_nothing_or_another_recipe(tmp_path):
    from nas import checkpoint
    from nas.engine import ResumableRun
    from nas.errors import UserError

    path = tmp_path / "run" / "supernet.pt"
    with pytest.raises(UserError, match="--resume: no checkpoint at .*; start without --resume"):
        ResumableRun.open(Recipe(), path, resume=True, formats=(checkpoint.FORMAT,), holds="a supernet")
    model, opt = _toy()
    _run_three_epochs(ResumableRun(), model, opt, path, [])
    with pytest.raises(UserError, match="already holds a supernet; use --resume .* or choose --name"):
        ResumableRun.open(Recipe(), path, resume=False, formats=(checkpoint.FORMAT,), holds="a supernet")
    with pytest.raises(RecipeChangeError, match="lr"):
        ResumableRun.open(Recipe(lr=0.5), path, resume=True, formats=(checkpoint.FORMAT,), holds="a supernet")
    with pytest.raises(UserError, match="--threads 0 must be >= 1"):   # the recipe is checked first
        ResumableRun.open(Recipe(threads=0), path, resume=True, formats=(checkpoint.FORMAT,), holds="a supernet")


def test_a_recipe_field_declared_once_is_a_flag_and_a_resume_rule():
    """A new field touches one place: its declaration gives the flag (name, type, default, help,
    choices), the CLI's field map and whether a resume may change it."""
    import argparse
    from dataclasses import dataclass

    from nas.engine import RecipeBase, add_recipe_flags, option, recipe_flags

    @dataclass
    class Toy(RecipeBase):
        knob_ratio: float = option(0.5, "a knob (default {default})")
        style: str = option("a", choices=("a", "b"), flag="--look")
        fast_path: bool = option(False, "faster, same result", runtime=True)
        hidden: int = option(3, cli=False)

    parser = argparse.ArgumentParser()
    add_recipe_flags(parser, Toy)
    args = parser.parse_args(["--knob-ratio", "0.25", "--look", "b", "--fast-path"])
    assert (args.knob_ratio, args.look, args.fast_path) == (0.25, "b", True)
    assert vars(parser.parse_args([]))["knob_ratio"] == 0.5 and "hidden" not in vars(args)
    assert "a knob (default 0.5)" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--look", "c"])
    assert {a: f.name for a, f in recipe_flags(Toy).items()}["look"] == "style"
    assert "fast_path" in Toy.runtime_fields() and "knob_ratio" not in Toy.runtime_fields()
    recorded = Toy().to_dict()
    assert Toy.resumed(recorded, {"fast_path": True}).fast_path is True
    with pytest.raises(RecipeChangeError, match="knob_ratio"):
        Toy.resumed(recorded, {"knob_ratio": 0.25})
