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


TINY_FASTVIT_SPACE = """\
family: fastvit
resolution: 64
num_classes: 10
width_step: 32
stages:
  - {max_width: 64, min_width: 32, slots: 2, choices: [repmixer, identity]}
  - {max_width: 64, min_width: 32, slots: 1, choices: [repmixer, identity]}
  - {max_width: 128, min_width: 32, slots: 2, choices: [repmixer, identity]}
  - {max_width: 128, min_width: 64, slots: 2, choices: [repmixer, attention, identity]}
"""


TINY_MOBILEVIT_SPACE = """\
family: mobilevitv3
resolution: 64
num_classes: 10
width_step: 16
knobs: {flavour: v1, mv2_expansion: 2}
stages:
  - {max_width: 16, min_width: 16, slots: 1, choices: [mv2, identity], min_blocks: 0}
  - {max_width: 32, min_width: 16, slots: 1, choices: [mv2, identity], min_blocks: 0}
  - {max_width: 32, min_width: 16, slots: 2, choices: [transformer, identity], dim: [16, 32]}
  - {max_width: 48, min_width: 32, slots: 2, choices: [transformer, identity], dim: [32, 48]}
  - {max_width: 64, min_width: 32, slots: 2, choices: [transformer, identity], dim: [32, 48]}
"""


TINY_IFORMER_SPACE = """\
family: iformer
resolution: 64
num_classes: 10
width_step: 16
stages:
  - {max_width: 32, min_width: 16, slots: 1, choices: [conv, identity]}
  - {max_width: 32, min_width: 16, slots: 1, choices: [conv, identity]}
  - {max_width: 64, min_width: 32, slots: 2, choices: [conv, shma, identity], r: [2, 4]}
  - {max_width: 64, min_width: 32, slots: 2, choices: [conv, shma, identity], r: [2, 4]}
"""


def randomise(model):
    """Random weights, BN statistics and layer scales (eval mode): equivalence tests on a fresh
    model would compare near-identity blocks (layer scale 1e-5) and prove little."""
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def timm_pair(family_module, variant: str, timm_prefix: str):
    """timm's model with random weights/statistics, and ours with those weights mapped on."""
    import timm

    reference = randomise(timm.create_model(f"{timm_prefix}_{variant}"))
    ours = timm.create_model(f"nas_{family_module.FAMILY.name}_{variant}").eval()
    ours.load_state_dict(family_module.convert_timm_state_dict(reference.state_dict()), strict=True)
    return reference, ours


@pytest.fixture
def tiny_space_path(tmp_path):
    p = tmp_path / "tiny_space.yaml"
    p.write_text(TINY_SPACE)
    return p


@pytest.fixture
def tiny_space(tiny_space_path):
    from supernets.config import SearchSpace

    return SearchSpace.load(tiny_space_path)
