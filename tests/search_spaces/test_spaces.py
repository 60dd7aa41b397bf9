"""The shipped spaces: every published variant the issue names is a point of its family's
paper-scale space, and the paper-scale supernet hands it its weights."""
import pytest
import torch

import search_spaces
from lut import graph
from supernets.config import ArchConfig, Choice, ConfigError, SearchSpace
from supernets.registry import family_names, get_family
from supernets.supernet import Supernet

# What each paper-scale space must contain (MobileViTv3's v2-flavour 0.5/0.75/1.0 and iFormer's
# L2/H are not required: a v1 space cannot hold v2 blocks, and L2/H would double iFormer's supernet).
REQUIRED = {
    "efficientformer": ["l1", "l3", "l7"],
    "fastvit": ["t8", "t12", "s12", "sa12", "sa24", "sa36", "ma36"],
    "mobilevitv3": ["xxs", "xs", "s", "xxs_l2", "xs_l2", "s_l2"],
    "iformer": ["t", "s", "m", "l"],
    "fmvit": ["t", "s", "m", "b", "l"],
}
CASES = [(f, v) for f, vs in REQUIRED.items() for v in vs]


def _point(family: str, variant: str):
    space = SearchSpace.load(search_spaces.space_path(family))
    # The head's training options (layer-scale init, a distillation head) are not searched.
    published = ArchConfig.load(search_spaces.variant_path(family, variant)).replace(head=dict(space.head))
    choice = Choice.from_config(published, space)
    return space, published, choice, choice.to_config(space, num_classes=published.num_classes)


@pytest.mark.parametrize("family,variant", CASES)
def test_published_variant_is_a_point_of_the_paper_space(family, variant):
    _, published, _, point = _point(family, variant)
    # the same network: the same ops (so the same latency) and the same tensors
    assert graph.keys(point) == graph.keys(published)
    build = get_family(family).build
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in build(published).state_dict().items()}
        got = {k: tuple(v.shape) for k, v in build(point).state_dict().items()}
    assert got == want


@pytest.mark.parametrize("family", sorted(REQUIRED))
def test_the_paper_supernet_hands_every_published_variant_its_weights(family):
    space = SearchSpace.load(search_spaces.space_path(family))
    with torch.device("meta"):
        net = Supernet(space)
        for variant in REQUIRED[family]:
            _, published, choice, _ = _point(family, variant)
            model = net.subnet(choice)
            assert sum(p.numel() for p in model.parameters()) == sum(
                p.numel() for p in get_family(family).build(published.replace(num_classes=space.num_classes)).parameters())


@pytest.mark.parametrize("family", family_names())
def test_the_paper_space_is_at_least_as_large_as_the_small_one(family):
    small = SearchSpace.load(search_spaces.space_path(family, "small"))
    paper = SearchSpace.load(search_spaces.space_path(family))
    for j, (s, p) in enumerate(zip(small.stages, paper.stages)):
        assert s.max_width <= p.max_width and s.slots <= p.slots and set(s.choices) <= set(p.choices), j


def test_a_variant_outside_the_space_is_refused_naming_the_field():
    space = SearchSpace.load(search_spaces.space_path("mobilevitv3"))
    with pytest.raises(ConfigError, match="knobs.flavour: the config has 'v2', the space 'v1'"):
        Choice.from_config(ArchConfig.load(search_spaces.variant_path("mobilevitv3", "050")), space)
    space = SearchSpace.load(search_spaces.space_path("efficientformer", "small"))
    with pytest.raises(ConfigError, match=r"stages\[0\].width: 96 is not a width of the space"):
        Choice.from_config(ArchConfig.load(search_spaces.variant_path("efficientformer", "l7")), space)
    fastvit = ArchConfig.load(search_spaces.variant_path("fastvit", "t8")).to_dict()
    fastvit["stages"][0]["blocks"][0] = {"kind": "repmixer", "mlp_ratio": 4}
    with pytest.raises(ConfigError, match=r"stages\[0\].blocks\[0\]: per-block knob\(s\) mlp_ratio"):
        Choice.from_config(ArchConfig.from_dict(fastvit), SearchSpace.load(search_spaces.space_path("fastvit")))
