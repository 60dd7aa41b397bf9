import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

TINY_SPACE = """\
family: efficientformer
resolution: 64
num_classes: 10
width_step: 16
head: {distillation: false}
stages:
  - {max_width: 32, min_width: 16, slots: 2, choices: [mb4d, identity]}
  - {max_width: 32, min_width: 16, slots: 1, choices: [mb4d, identity]}
  - {max_width: 48, min_width: 16, slots: 2, choices: [mb4d, mb3d, identity]}
  - {max_width: 64, min_width: 32, slots: 2, choices: [mb4d, mb3d, identity]}
"""


@pytest.fixture
def tiny_space_path(tmp_path):
    p = tmp_path / "tiny_space.yaml"
    p.write_text(TINY_SPACE)
    return p


@pytest.fixture
def tiny_space(tiny_space_path):
    from supernets.config import SearchSpace

    return SearchSpace.load(tiny_space_path)
