import pytest

from nas.supernet_training import Recipe, train_supernet
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

# Fixed widths, five slots: 12 ops in all, for a test that lowers each op it prices to its own
# ExecuTorch program (seconds apiece): the tiny space's 52 would make it the suite's slowest test
MICRO_SPACE = """\
family: efficientformer
resolution: 64
num_classes: 10
width_step: 16
head: {distillation: false}
stages:
  - {max_width: 16, min_width: 16, slots: 1, choices: [mb4d, identity]}
  - {max_width: 16, min_width: 16, slots: 1, choices: [mb4d, identity]}
  - {max_width: 32, min_width: 32, slots: 1, choices: [mb4d, identity]}
  - {max_width: 32, min_width: 32, slots: 2, choices: [mb4d, mb3d, identity]}
"""
micro_run = _tiny_run(MICRO_SPACE, "micro", "efficientformer", "An EfficientFormer supernet of 12 ops.")


# `nas search` flags for tiny supernets: the shipped Apple cost model prices them, small subsets score them
SEARCH_FLAGS = ["--device", "iphone12", "--population", "4", "--val-images", "100", "--calib-images", "32",
                "--no-progress"]


def concurrent_searches(argv: list[str], seeds=(1, 2)) -> None:
    """Run `nas <argv> --seed S` as separate processes at once; each must exit 0."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-m", "nas.cli", *argv, "--seed", str(seed)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in seeds]
    try:
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * len(procs), [err[-2000:] for _, err in results]


def assert_one_shared_budget(trials, budget: int) -> None:
    """Workers of one study: unique trial numbers, the budget met (give or take one trial in
    flight per extra worker), no failed trial."""
    import optuna

    finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len({t.number for t in trials}) == len(trials)
    assert budget <= len(finished) <= budget + 1
    assert not [t for t in trials if t.state == optuna.trial.TrialState.FAIL]


@pytest.fixture
def few_digits(monkeypatch):
    """The embedded digits cut to 256 training and 64 validation images, for tests of orchestration
    (which runs train, resume, skip) rather than of what training reaches."""
    from nas import data

    full = data._digits

    def few(img_size, seed):
        d = full(img_size, seed)
        cut = lambda s, n: data.GreyImages(s.images[:n], s.labels[:n], s.img_size, s.scale)
        return data.Data(cut(d.train, 256), cut(d.val, 64), d.num_classes, d.source, d.in_memory)

    monkeypatch.setattr(data, "_digits", few)


@pytest.fixture
def digit_folder(tmp_path):
    """A small ImageFolder on disk (PNG files of the bundled digits, 3 classes)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for split, start, n in (("train", 0, 12), ("val", 500, 4)):
        for cls in range(3):
            folder = tmp_path / split / f"class{cls}"
            folder.mkdir(parents=True)
            picks = [i for i in range(start, len(d.target)) if d.target[i] == cls][:n]
            for i in picks:
                Image.fromarray((d.images[i] * 15).astype("uint8")).convert("RGB").save(folder / f"{i}.png")
    return tmp_path


# The kind that attends in each family (FMViT's FMBs sit inside its CFB stages, as its paper has them)
ATTENTION_KIND = {"efficientformer": "mb3d", "fastvit": "attention", "mobilevitv3": "transformer",
                  "iformer": "shma", "fmvit": "cfb"}
# Every family in the full suite only: each trains a model below its deploy resolution, too slow
# for the fast tier's budget (`-m "not slow"`, whose export and eval tests cover the same modules)
ATTENTION_FAMILIES = [pytest.param(f, marks=pytest.mark.slow) for f in ATTENTION_KIND]
TINY_SPACES = {"efficientformer": TINY_SPACE, "fastvit": TINY_FASTVIT_SPACE, "mobilevitv3": TINY_MOBILEVIT_SPACE,
               "iformer": TINY_IFORMER_SPACE, "fmvit": TINY_FMVIT_SPACE}


def attention_config(family: str, resolution: int = 224):
    """The family's tiny space at full width, its last stage attending in every slot (the other
    stages take their first kind), deployed at `resolution`."""
    import yaml

    from supernets.config import Choice, SearchSpace

    space = SearchSpace.from_dict(yaml.safe_load(TINY_SPACES[family]))
    last = len(space.stages) - 1
    kinds = tuple(tuple(ATTENTION_KIND[family] if j == last and ATTENTION_KIND[family] in st.choices else st.choices[0]
                        for _ in range(st.slots)) for j, st in enumerate(space.stages))
    choice = Choice(tuple(st.max_width for st in space.stages), kinds)
    return choice.to_config(space, 10).replace(resolution=resolution, name=f"{family}-attention")


class _TrainedOnDemand(dict):
    """family -> model.pt, each trained the first time a test asks for it."""

    def __init__(self, train):
        super().__init__()
        self._train = train

    def __missing__(self, family):
        self[family] = self._train(family)
        return self[family]


@pytest.fixture(scope="session")
def attention_models(tmp_path_factory):
    """family -> a model.pt of the family's attention config (deployed at 224 px), trained for one
    epoch on the embedded digits at 32 px: below its deploy resolution, as a CPU user trains."""
    from nas.train_model import train_config

    root = tmp_path_factory.mktemp("attention")

    def train(family):
        path = root / f"{family}.yaml"
        attention_config(family).save(path)
        return train_config(path, out_dir=root / family, img_size=32, epochs=1, batch_size=64, progress=False,
                            log=lambda line: None).path

    return _TrainedOnDemand(train)
