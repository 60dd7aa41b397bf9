"""What both training recipes share (`nas.engine.RecipeBase`): resuming under the run's recipe."""
import pytest

from nas.errors import ParameterError, RecipeChangeError
from nas.train import Recipe
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
