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
knobs: {flavour: v1}
stages:
  - {max_width: 16, min_width: 16, slots: 1, choices: [mv2, identity], min_blocks: 0, mv2_expansion: 2}
  - {max_width: 32, min_width: 16, slots: 1, choices: [mv2, identity], min_blocks: 0, mv2_expansion: 2}
  - {max_width: 32, min_width: 16, slots: 2, choices: [transformer, identity], dim: [16, 32], mv2_expansion: 2}
  - {max_width: 48, min_width: 32, slots: 2, choices: [transformer, identity], dim: [32, 48], mv2_expansion: 2}
  - {max_width: 64, min_width: 32, slots: 2, choices: [transformer, identity], dim: [32, 48], mv2_expansion: 2}
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

TINY_FMVIT_SPACE = """\
family: fmvit
resolution: 64
num_classes: 10
width_step: 16
stages:
  - {max_width: 32, min_width: 16, slots: 1, choices: [cfb, identity]}
  - {max_width: 32, min_width: 16, slots: 1, choices: [cfb, identity], hf_branches: [0, 1, 2], fm_width: [16, 32]}
  - {max_width: 64, min_width: 32, slots: 2, choices: [cfb, identity], hf_branches: [0, 1, 2, 3], fm_width: [16, 32], out_width: 64}
  - {max_width: 64, min_width: 32, slots: 1, choices: [cfb, identity], hf_branches: [1, 3], fm_width: [32], out_width: [48, 64]}
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


def random_supernet(space_text: str):
    """The supernet of a YAML search space text, with random weights and BN statistics (eval mode)."""
    import yaml

    from supernets.config import SearchSpace
    from supernets.supernet import Supernet

    return randomise(Supernet(SearchSpace.from_dict(yaml.safe_load(space_text)), img_size=64))


def pick_paths(net, kinds) -> None:
    """Make every MetaPath of `net` prefer the kind `kinds` gives its slot (stage by stage) and run
    it alone (hard mixing): the supernet then computes that one subnet."""
    import torch

    with torch.no_grad():
        for stage, row in zip(net.metapaths(), kinds):
            for mp, kind in zip(stage, row):
                mp.alpha.copy_(torch.tensor([5.0 if c == kind else 0.0 for c in mp.choices]))
    net.set_mixing("hard", 1.0)


def train_and_deploy_outputs(timm_name: str, resolution: int):
    """A published variant with random weights, its deploy form, and the outputs of both
    (train form first) on one random image."""
    import timm
    import torch

    from supernets.layers import reparameterize

    model = randomise(timm.create_model(timm_name))
    deployed = reparameterize(model)
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return deployed, model(x), deployed(x)


def assert_deploy_form_exports(timm_name: str, resolution: int) -> None:
    """The deploy form traces with torch.export and the program computes what the module does."""
    import timm
    import torch

    from supernets.layers import reparameterize

    deployed = reparameterize(timm.create_model(timm_name).eval())
    x = torch.randn(1, 3, resolution, resolution)
    program = torch.export.export(deployed, (x,))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), deployed(x), atol=1e-5)


def timm_pair(family_module, variant: str, timm_prefix: str):
    """timm's model with random weights/statistics, and ours with those weights mapped on."""
    import timm

    reference = randomise(timm.create_model(f"{timm_prefix}_{variant}"))
    ours = timm.create_model(f"nas_{family_module.FAMILY.name}_{variant}").eval()
    ours.load_state_dict(family_module.convert_timm_state_dict(reference.state_dict()), strict=True)
    return reference, ours


def largest_in_full_suite(variants, largest):
    """Parametrize over `variants`, the `largest` of them in the full suite only: the fast tier
    keeps the family's smaller variants, which exercise the same code."""
    return [pytest.param(v, marks=pytest.mark.slow) if v in largest else v for v in variants]


def kill_during_second_epoch(cmd: list[str], ckpt, *, beside: list[str] | None = None) -> None:
    """Start `cmd` (a training command line) and SIGKILL it shortly after its first epoch's
    checkpoint `ckpt` appears; the resume tests then continue it and compare. `beside`: the
    uninterrupted run to compare with, run at the same time (the runs are deterministic, so the
    second core may as well work); it must succeed."""
    import signal
    import subprocess
    import time

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    other = subprocess.Popen(beside, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) if beside else None
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)   # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if other is not None:
        _, err = other.communicate(timeout=600)
        assert other.returncode == 0, err.decode()[-2000:]


@pytest.fixture
def tiny_space_path(tmp_path):
    p = tmp_path / "tiny_space.yaml"
    p.write_text(TINY_SPACE)
    return p


@pytest.fixture
def tiny_space(tiny_space_path):
    from supernets.config import SearchSpace

    return SearchSpace.load(tiny_space_path)
