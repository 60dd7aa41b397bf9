import pytest

from nas.train import Recipe, train_supernet


def _train_tiny(tmp_path_factory, space_text: str, name: str, family: str):
    root = tmp_path_factory.mktemp("runs")
    space = root / f"{name}_space.yaml"
    space.write_text(space_text)
    recipe = Recipe(family=family, space=str(space), img_size=32, epochs=1, batch_size=128)
    return train_supernet(recipe, root / name, progress=False, log=lambda s: None)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny EfficientFormer supernet trained for one epoch on the embedded digits."""
    from tests.conftest import TINY_SPACE

    return _train_tiny(tmp_path_factory, TINY_SPACE, "tiny", "efficientformer")


@pytest.fixture(scope="session")
def tiny_fastvit_run(tmp_path_factory):
    """A tiny FastViT supernet (attention possible in stage 4) trained for one epoch."""
    from tests.conftest import TINY_FASTVIT_SPACE

    return _train_tiny(tmp_path_factory, TINY_FASTVIT_SPACE, "tiny_fastvit", "fastvit")


@pytest.fixture(scope="session")
def tiny_mobilevit_run(tmp_path_factory):
    """A tiny MobileViTv3 supernet (elastic transformer depth and width) trained for one epoch."""
    from tests.conftest import TINY_MOBILEVIT_SPACE

    return _train_tiny(tmp_path_factory, TINY_MOBILEVIT_SPACE, "tiny_mobilevit", "mobilevitv3")


@pytest.fixture(scope="session")
def tiny_iformer_run(tmp_path_factory):
    """A tiny iFormer supernet (conv/SHMA slots, elastic q/k reduction) trained for one epoch."""
    from tests.conftest import TINY_IFORMER_SPACE

    return _train_tiny(tmp_path_factory, TINY_IFORMER_SPACE, "tiny_iformer", "iformer")
