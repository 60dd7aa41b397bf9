import random

import pytest
import torch

from supernets.layers import MultiGroupConv, expand_groups, reparameterize
from tests.conftest import randomise


@pytest.mark.parametrize("seed", range(40))
def test_multi_group_reparameterization_is_exact_for_random_shapes(seed):
    """Property: for random channel counts, base groups, kernel sizes, strides, branch lists
    (more groups and/or smaller square or rectangular kernels) and shortcuts, the train form
    equals its single deploy conv."""
    rng = random.Random(seed)
    groups = rng.choice([1, 1, 2, 3, 4])
    in_chs = groups * rng.choice([1, 2, 4, 6, 8])
    out_chs = groups * rng.choice([1, 2, 4, 8])
    kernel = rng.choice([1, 3, 5, 7])
    kernels = [None, 1, 3, 5, (3, 1), (1, 3), (1, 5)]
    branches = tuple((rng.choice(kernels), rng.choice([1, 2, 4, 8])) for _ in range(rng.randint(1, 4)))
    stride = rng.choice([1, 2])
    residual = in_chs == out_chs and stride == 1 and rng.random() < 0.5
    block = randomise(MultiGroupConv(in_chs, out_chs, kernel, stride, groups, branches, residual=residual))
    deployed = reparameterize(block)
    assert isinstance(deployed, torch.nn.Conv2d) and deployed.groups == groups
    assert deployed.kernel_size == (kernel, kernel)
    x = torch.randn(2, in_chs, 9, 10, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want, got = block(x), deployed(x)
    assert (got - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item())


def test_group_multiples_add_more_groups_and_a_1x1():
    multiples = ((None, 2), (None, 4), (1, 1))
    block = MultiGroupConv(16, 32, 3, groups=2, branches=multiples)
    kinds = [(b.conv.kernel_size[0], b.conv.groups) for b in block.extra]
    assert kinds == [(3, 4), (3, 8), (1, 2)]
    # 6 channels, 3 groups, 1x1: 6 groups fit, 12 do not, and a 1x1 branch would repeat the main conv
    assert [b.conv.groups for b in MultiGroupConv(6, 6, 1, groups=3, branches=multiples).extra] == [6]


def test_fmvit_branches_have_groups_of_a_fixed_width_so_narrower_widths_are_prefixes():
    """Groups of 16 and 8 input channels: at 64 -> 128 channels 4 and 8 groups, at 32 -> 64 two
    and four; output channel o reads the same inputs at both widths (whole groups)."""
    def groups(c_in, c_out):
        return [b.conv.groups for b in MultiGroupConv(c_in, c_out, 1).extra]

    assert groups(64, 128) == [4, 8] and groups(32, 64) == [2, 4]
    assert groups(16, 16) == [1, 2]   # one group at the narrowest: the branch exists at every width
    wide, narrow = MultiGroupConv(64, 128, 1).extra[0].conv, MultiGroupConv(32, 64, 1).extra[0].conv
    per_group = lambda conv: (conv.in_channels // conv.groups, conv.out_channels // conv.groups)  # noqa: E731
    assert per_group(wide) == per_group(narrow) == (16, 32)
    edges = MultiGroupConv(3, 8, 3, 2, branches=(((3, 1), 1), ((1, 3), 1), ((3, 5), 1)))
    assert [b.conv.kernel_size for b in edges.extra] == [(3, 1), (1, 3)]   # 3x5 does not fit in 3x3


def test_residual_needs_a_shape_preserving_conv():
    with pytest.raises(ValueError, match="residual"):
        MultiGroupConv(8, 16, 3, residual=True)


def test_expand_groups_places_each_branch_group_inside_its_coarser_group():
    w = torch.arange(1.0, 9.0).reshape(4, 2, 1, 1)            # 4 groups of 2 in -> 1 out each
    dense = expand_groups(w, branch_groups=4, groups=2)        # 2 groups of 4 in -> 2 out each
    assert dense[:, :, 0, 0].tolist() == [[1, 2, 0, 0], [0, 0, 3, 4], [5, 6, 0, 0], [0, 0, 7, 8]]
    with pytest.raises(ValueError, match="does not nest"):
        expand_groups(w, branch_groups=4, groups=3)


@pytest.mark.parametrize("name", ["nas_efficientformer_l1", "nas_fastvit_sa12", "nas_mobilevitv3_xs",
                                  "nas_iformer_m", "nas_fmvit_s"])
def test_drop_path_rate_grows_linearly_over_blocks_and_never_drops_in_eval(name):
    import timm
    from timm.layers import DropPath

    from supernets.registry import get_family

    get_family(name.split("_")[1])   # registers the family's nas_* models with timm (run alone too)

    # random weights: a fresh FMViT starts every residual branch at 0 (zero_init_last), where
    # dropping it would change nothing
    plain = randomise(timm.create_model(name, num_classes=10))
    dropped = randomise(timm.create_model(name, num_classes=10, drop_path_rate=0.2))
    blocks = [b for stage in dropped.stages for b in stage.blocks]
    rates = [[m.drop_path.drop_prob for m in b.modules() if isinstance(getattr(m, "drop_path", None), DropPath)]
             for b in blocks]
    assert rates[0] == [] and all(rates[1:]), "every block after the first has stochastic depth"
    assert max(rates[-1]) == pytest.approx(0.2)
    assert [r[0] for r in rates[1:]] == sorted(r[0] for r in rates[1:])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(plain(x), dropped(x))
        dropped.train()
        assert not torch.equal(dropped(x), dropped(x))
