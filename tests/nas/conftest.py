import pytest

from nas.train import Recipe, train_supernet


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny EfficientFormer supernet trained for one epoch on the embedded digits."""
    from tests.conftest import TINY_SPACE

    root = tmp_path_factory.mktemp("runs")
    space = root / "tiny_space.yaml"
    space.write_text(TINY_SPACE)
    run_dir = root / "tiny"
    ckpt = train_supernet(Recipe(space=str(space), img_size=32, epochs=1, batch_size=128), run_dir,
                          progress=False, log=lambda s: None)
    return ckpt
