import pytest
import yaml

import search_spaces
from supernets.config import ArchConfig, Choice, ConfigError, SearchSpace


def _l1():
    return yaml.safe_load(search_spaces.variant_path("efficientformer", "l1").read_text())


def test_variant_round_trip(tmp_path):
    cfg = ArchConfig.load(search_spaces.variant_path("efficientformer", "l1"))
    assert cfg.widths == (48, 96, 224, 448) and cfg.depths == (3, 2, 6, 4)
    cfg.save(tmp_path / "c.yaml")
    assert ArchConfig.load(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["stages"][3].update(width=450), "stages[3].width: 450 is not a multiple of 16"),
    (lambda d: d.update(family="resnet"), "family: unknown family 'resnet'"),
    (lambda d: d["stages"][1]["blocks"].append("mb5d"), "stages[1].blocks[2]: unknown block kind 'mb5d'"),
    (lambda d: d["stages"][3]["blocks"].append("mb4d"), "stages[3].blocks[4]: mb4d after mb3d"),
    (lambda d: d.update(resolution=230), "resolution: 230 is not a multiple of 32"),
    (lambda d: d["stem"].update(width=64), "stem.width: 64 must equal stages[0].width"),
    (lambda d: d.pop("stages"), "stages: is required"),
    (lambda d: d.update(colour="red"), "unknown field(s) colour"),
])
def test_errors_name_the_field(mutate, message):
    raw = _l1()
    mutate(raw)
    with pytest.raises(ConfigError) as e:
        ArchConfig.from_dict(raw)
    assert message in str(e.value)


def test_malformed_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("family: efficientformer\nstages: [\n  {width: 48\n")
    with pytest.raises(ConfigError, match=r"malformed YAML \(line \d+"):
        ArchConfig.load(p)


def test_space_validation(tiny_space_path):
    raw = yaml.safe_load(tiny_space_path.read_text())
    raw["stages"][0]["choices"] = ["mb4d", "conv9"]
    with pytest.raises(ConfigError, match=r"stages\[0\].choices: unknown choice 'conv9'"):
        SearchSpace.from_dict(raw)
    raw = yaml.safe_load(tiny_space_path.read_text())
    raw["stages"][2]["min_width"] = 64
    with pytest.raises(ConfigError, match=r"stages\[2\].min_width: 64 exceeds max_width 48"):
        SearchSpace.from_dict(raw)


def test_choice_config_mapping(tiny_space):
    choice = Choice((32, 16, 48, 64), (("mb4d", "identity"), ("mb4d",), ("mb4d", "mb3d"), ("identity", "mb3d")))
    cfg = choice.to_config(tiny_space)
    assert cfg.depths == (1, 1, 2, 1) and cfg.stem_width == 32
    # identity slots are absent from the config; mapping back fills the first slots
    back = Choice.from_config(cfg, tiny_space)
    assert back.kinds[3] == ("mb3d", "identity") and back.widths == choice.widths
    with pytest.raises(ConfigError, match=r"stages\[3\].width: 96 is outside"):
        Choice.from_config(cfg.replace(stages=cfg.stages[:3] + (cfg.stages[3].__class__(96, cfg.stages[3].blocks),)),
                           tiny_space)
