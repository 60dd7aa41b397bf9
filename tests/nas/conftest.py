import pytest

from nas.train import Recipe, train_supernet
from tests.conftest import TINY_FASTVIT_SPACE, TINY_FMVIT_SPACE, TINY_IFORMER_SPACE, TINY_MOBILEVIT_SPACE, TINY_SPACE


def _tiny_run(space_text: str, name: str, family: str, doc: str):
    """A session fixture: the family's tiny supernet trained for one epoch on the embedded digits."""

    @pytest.fixture(scope="session")
    def fixture(tmp_path_factory):
        root = tmp_path_factory.mktemp("runs")
        space = root / f"{name}_space.yaml"
        space.write_text(space_text)
        recipe = Recipe(family=family, space=str(space), img_size=32, epochs=1, batch_size=128)
        return train_supernet(recipe, root / name, progress=False, log=lambda s: None)

    fixture.__doc__ = doc
    return fixture


tiny_run = _tiny_run(TINY_SPACE, "tiny", "efficientformer", "A tiny EfficientFormer supernet.")
tiny_fastvit_run = _tiny_run(TINY_FASTVIT_SPACE, "tiny_fastvit", "fastvit",
                             "A tiny FastViT supernet (attention possible in stage 4).")
tiny_mobilevit_run = _tiny_run(TINY_MOBILEVIT_SPACE, "tiny_mobilevit", "mobilevitv3",
                               "A tiny MobileViTv3 supernet (elastic transformer depth and width).")
tiny_iformer_run = _tiny_run(TINY_IFORMER_SPACE, "tiny_iformer", "iformer",
                             "A tiny iFormer supernet (conv/SHMA slots, elastic q/k reduction).")
tiny_fmvit_run = _tiny_run(TINY_FMVIT_SPACE, "tiny_fmvit", "fmvit",
                           "A tiny FMViT supernet (CFB slots, FMBs with an α-searched frequency split).")
