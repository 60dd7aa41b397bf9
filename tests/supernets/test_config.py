import pytest
import yaml

import search_spaces
from supernets.config import IDENTITY, ArchConfig, Choice, ConfigError, SearchSpace


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
    with pytest.raises(ConfigError, match=r"stages\[3\].width: 96 is not a width of the space \(32..64 in steps of 16\)"):
        Choice.from_config(cfg.replace(stages=cfg.stages[:3] + (cfg.stages[3].__class__(96, cfg.stages[3].blocks),)),
                           tiny_space)


def test_stage_knobs_round_trip_through_yaml_choice_and_space(tmp_path):
    from tests.conftest import TINY_MOBILEVIT_SPACE

    (tmp_path / "space.yaml").write_text(TINY_MOBILEVIT_SPACE)
    space = SearchSpace.load(tmp_path / "space.yaml")
    assert space.stages[3].knobs == {"dim": (32, 48), "mv2_expansion": (2,)}
    assert space.supernet_knobs(3) == {"dim": 48, "mv2_expansion": 2}
    assert SearchSpace.from_dict(space.to_dict()) == space
    choice = Choice((16, 32, 32, 48, 64), (("mv2",), (IDENTITY,), ("transformer",) * 2, ("transformer", IDENTITY),
                                           ("transformer",) * 2)).replace_knob(space, 3, "dim", 32)
    cfg = choice.to_config(space)
    assert [s.knobs for s in cfg.stages] == [{"mv2_expansion": 2}] * 2 + [{"dim": d, "mv2_expansion": 2} for d in (32, 32, 48)]
    cfg.save(tmp_path / "c.yaml")
    again = ArchConfig.load(tmp_path / "c.yaml")
    assert again == cfg and again.knobs == {"flavour": "v1"}
    assert Choice.from_config(again, space) == Choice.from_dict(choice.to_dict()).replace_knob(space, 2, "dim", 32)
    bad = again.to_dict()
    bad["stages"][3]["dim"] = 40
    with pytest.raises(ConfigError, match=r"stages\[3\]\.dim: 40 is not one of the space's values \[32, 48\]"):
        Choice.from_config(ArchConfig.from_dict(bad), space)
    raw = space.to_dict()
    raw["stages"][2]["dim"] = ["wide"]
    with pytest.raises(ConfigError, match=r"stages\[2\]\.dim: expected a number or a non-empty list"):
        SearchSpace.from_dict(raw)


@pytest.mark.parametrize("change, message", [
    ({"head": {"distillation": "maybe"}}, "head.distillation: 'maybe' is not true or false"),
    ({"head": {"distillation": True, "foo": 1}}, "head: unknown field(s) foo (allowed: distillation)"),
    ({"head": 5}, "head: expected a mapping"),
    ({"meta": 5}, "meta: expected a mapping"),
    ({"knobs": [1]}, "knobs: expected a mapping"),
    ({1: "a", "foo": "b"}, "config: unknown field(s) 1, foo"),           # keys of mixed types still sort
    ({"stages": [{"width": 100000, "blocks": ["mb4d"]}] * 4}, "stages[0].width: 100000 must be <= 8192"),
    ({"stages": [{"width": "x" * 100000, "blocks": ["mb4d"]}] * 4}, "stages[0].width: 'xxxxx"),
])
def test_config_values_are_validated_in_one_line(change, message):
    raw = {**ArchConfig.load(search_spaces.variant_path("efficientformer", "l1")).to_dict(), **change}
    with pytest.raises(ConfigError) as e:
        ArchConfig.from_dict(raw)
    assert message in str(e.value) and len(str(e.value)) < 200 and "\n" not in str(e.value)


def test_head_options_are_typed_per_family():
    fastvit = ArchConfig.load(search_spaces.variant_path("fastvit", "t8")).to_dict()
    with pytest.raises(ConfigError, match=r"head.layer_scale_init: 'abc' is not a number in \[0.0, 1.0\]"):
        ArchConfig.from_dict({**fastvit, "head": {"layer_scale_init": "abc"}})
    fmvit = ArchConfig.load(search_spaces.variant_path("fmvit", "t")).to_dict()
    with pytest.raises(ConfigError, match="head: fmvit has no head options, got drop_rate"):
        ArchConfig.from_dict({**fmvit, "head": {"drop_rate": 0.1}})


def test_deeply_nested_yaml_is_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        ArchConfig.load(path)
