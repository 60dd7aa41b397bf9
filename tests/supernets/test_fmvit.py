import pytest
import timm
import torch

import search_spaces
from lut import graph
from supernets import fmvit as fm
from supernets.config import IDENTITY, ArchConfig, Choice, ConfigError
from supernets.layers import MultiGroupConv, count_params, reparameterize
from supernets.metapath import KnobChoice
from tests.conftest import (
    TINY_FMVIT_SPACE,
    assert_deploy_form_exports,
    pick_paths,
    random_supernet,
    randomise,
    train_and_deploy_outputs,
)

# Paper Table 2 (224 px): params (M) and FLOPs (G, counted as MACs like the paper's other rows,
# e.g. MobileNetV1 0.6, RepVGG-A0 1.4). Ours must land within ±10% / ±15% after reparameterization.
PAPER = {"t": (2.0, 0.3), "s": (6.4, 0.8), "m": (12.8, 2.0), "b": (24.3, 4.2), "l": (35.3, 7.1)}
# Our reconstruction's exact counts (train -> deploy), pinned so that an unintended change shows.
OURS = {"t": (2_203_592, 1_986_664), "s": (6_427_576, 6_072_328), "m": (13_321_064, 12_768_552),
        "b": (25_155_368, 24_076_232), "l": (37_004_904, 35_453_000)}


def _parity(variant: str) -> None:
    model = timm.create_model(f"nas_fmvit_{variant}").eval()
    deployed = reparameterize(model)
    assert (count_params(model), count_params(deployed)) == OURS[variant]
    params, flops = PAPER[variant]
    assert abs(count_params(deployed) / 1e6 / params - 1) <= 0.10
    assert abs(graph.macs(deployed, torch.zeros(1, 3, 224, 224)) / 1e9 / flops - 1) <= 0.15


@pytest.mark.parametrize("variant", ["t", "s", "m"])
def test_params_and_flops_within_the_paper_targets(variant):
    _parity(variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["b", "l"])
def test_params_and_flops_within_the_paper_targets_large(variant):
    _parity(variant)


def _deploy_check(variant: str) -> None:
    deployed, want, got = train_and_deploy_outputs(f"nas_fmvit_{variant}", 224)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, MultiGroupConv)) for m in deployed.modules())


@pytest.mark.parametrize("variant", ["t", "s"])
def test_deploy_form_equals_train_form(variant):
    _deploy_check(variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["m", "b", "l"])
def test_deploy_form_equals_train_form_large(variant):
    _deploy_check(variant)


def test_deploy_form_traces_with_torch_export():
    assert_deploy_form_exports("nas_fmvit_t", 224)


@pytest.mark.slow
def test_larger_variant_traces_with_torch_export():
    assert_deploy_form_exports("nas_fmvit_s", 224)


def test_rlmhsa_shares_one_projection_for_keys_and_values_and_queries_are_the_input():
    attn = randomise(fm.RLMHSA(64))
    assert attn.heads == 2
    x = torch.randn(1, 64, 3, 4)
    with torch.no_grad():
        xw = attn.proj(x)
        want = []
        for h in range(2):
            q, kv = x[0, 32 * h:32 * (h + 1)].flatten(1).T, xw[0, 32 * h:32 * (h + 1)].flatten(1).T   # (N, 32)
            want.append(torch.softmax(q @ kv.T / 32 ** 0.5, dim=-1) @ kv)
        want = torch.cat(want, 1).T.reshape(1, 64, 3, 4)
        assert torch.allclose(attn(x), want, atol=1e-5)
    assert [fm.num_heads(d) for d in (16, 48, 64, 96, 112)] == [1, 1, 2, 3, 2]   # 112: 2 heads of 56


def test_fmb_chains_high_frequency_branches_before_the_attention():
    block = randomise(fm.FMB(32, 16, 48, hf_branches=2))
    x = torch.randn(1, 32, 6, 6)
    with torch.no_grad():
        z0 = block.reduce(x)
        z1 = block.high[0](z0)
        z2 = block.high[1](z1)
        y = block.fuse([x, block.low(z2), z1, z2])
        assert torch.allclose(block(x), y + block.mlp(y), atol=1e-5)
    assert [c.in_channels for c in block.fuse.convs] == [32, 16, 16, 16]
    # no high-frequency branch: the attention reads the reduced input
    bare = randomise(fm.FMB(32, 16, 48, hf_branches=0))
    with torch.no_grad():
        y = bare.fuse([x, bare.low(bare.reduce(x))])
        assert torch.allclose(bare(x), y + bare.mlp(y), atol=1e-5)


def test_stem_has_edge_branches_and_folds_to_three_convs():
    stem = fm.Stem(32)
    assert [b.conv.kernel_size for b in stem[0].extra] == [(3, 1), (1, 3)]
    deployed = reparameterize(randomise(stem))
    assert [m.kernel_size for m in deployed.modules() if isinstance(m, torch.nn.Conv2d)] == [(3, 3), (3, 3), (1, 1)]


def test_patch_embedding_is_empty_only_when_nothing_changes():
    assert len(fm.PatchEmbed(32, 32, downsample=False)) == 0
    assert [type(m).__name__ for m in fm.PatchEmbed(32, 48, downsample=False)] == ["MultiGroupConv"]
    assert [type(m).__name__ for m in fm.PatchEmbed(32, 32, downsample=True)] == ["AvgPool2d", "MultiGroupConv"]


def _cfg(stage: int, **change):
    raw = ArchConfig.load(search_spaces.variant_path("fmvit", "t")).to_dict()
    raw["stages"][stage].update(change)
    return raw


@pytest.mark.parametrize("stage, change, message", [
    (1, {"hf_branches": 4}, "stages[1].hf_branches: 4 is out of range 0..3"),
    (1, {"fm_width": 40}, "stages[1].fm_width: 40 is not a positive multiple of 16"),
    (0, {"out_width": 64}, "stages[0].out_width: only a stage with an FMB"),
    (2, {"blocks": ["fmb"]}, "unknown block kind 'fmb'"),
    (2, {"blocks": [{"kind": "cfb", "hf_branches": 1}]}, "unknown knob(s) hf_branches"),
])
def test_bad_family_knobs_name_the_field(stage, change, message):
    with pytest.raises(ConfigError, match=rf"stages\[{stage}\]") as e:
        ArchConfig.from_dict(_cfg(stage, **change))
    assert message in str(e.value)


def test_op_graph_has_one_fmb_op_per_stage_with_its_split_in_the_key():
    keys = [n.key for n in fm.op_nodes(ArchConfig.load(search_spaces.variant_path("fmvit", "t")))]
    assert "fmb:c64:f64:n3:o80:sr4:28x28" in keys and "fmb:c192:f64:n3:o320:sr1:7x7" in keys
    assert "fm-embed:80>128:s2:28x28" in keys          # the next stage reads the FMB's out width
    assert keys[0].startswith("fm-stem") and keys[-1] == "fm-head:c320:7x7:k1000"
    assert len(keys) == 1 + 3 + (1 + 1 + 1) + (1 + 2 + 1) + (1 + 3 + 1) + 1   # stage 1 embeds nothing


@pytest.fixture
def fmvit_supernet():
    return random_supernet(TINY_FMVIT_SPACE)


def test_frequency_split_is_a_supernet_dimension_with_its_own_alpha(fmvit_supernet):
    net = fmvit_supernet
    splits = net.knob_choices()
    assert [sorted(s) for s in splits] == [[], ["hf_branches"], ["hf_branches"], ["hf_branches"]]
    assert [s["hf_branches"].values for s in splits[1:]] == [(0, 1, 2), (0, 1, 2, 3), (1, 3)]
    assert {id(p) for p in net.arch_parameters()} >= {id(s["hf_branches"].alpha) for s in splits[1:]}
    net.set_mixing("hard", 0.5)
    assert all(m.mode == "hard" and m.tau == 0.5 for m in net.modules() if isinstance(m, KnobChoice))
    # training reaches the split's α through the straight-through Gumbel sample
    net.train()
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(s["hf_branches"].alpha.grad is not None for s in splits[1:])


def test_supernet_with_a_fixed_split_equals_the_inherited_subnet(fmvit_supernet):
    net = fmvit_supernet
    kinds = (("cfb",), (IDENTITY,), ("cfb", IDENTITY), ("cfb",))
    pick_paths(net, kinds)
    split = {1: 1, 2: 0, 3: 3}
    with torch.no_grad():
        for j, n in split.items():
            knob = net.knob_choices()[j]["hf_branches"]
            knob.alpha.copy_(torch.tensor([5.0 if v == n else 0.0 for v in knob.values]))
    choice = Choice(tuple(s.max_width for s in net.space.stages), kinds)
    for j, n in split.items():
        choice = choice.replace_knob(net.space, j, "hf_branches", n)
    sub = net.subnet(choice).eval()
    assert [len(s.fmb.high) if j else None for j, s in enumerate(sub.stages)] == [None, 1, 0, 3]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(sub(x), net.eval()(x), atol=1e-5)


def test_narrower_fm_width_and_out_width_inherit_leading_channels(fmvit_supernet):
    net = fmvit_supernet
    choice = Choice(tuple(s.max_width for s in net.space.stages), (("cfb",), ("cfb",), ("cfb", "cfb"), ("cfb",)))
    choice = choice.replace_knob(net.space, 2, "fm_width", 16).replace_knob(net.space, 3, "out_width", 48)
    sub = net.subnet(choice)
    reduce_super = net.net.stages[2].fmb.reduce.main.conv.weight                   # 64 -> 32
    assert torch.equal(sub.stages[2].fmb.reduce.main.conv.weight, reduce_super[:16])
    assert sub.head.fc.in_features == 48
    assert sub(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_every_residual_block_starts_as_the_identity():
    """zero_init_last: FMViT has no layer scale, so a CFB and the FMB's GMLP start as the identity,
    and a supernet that samples depth sees the same residual stream at every depth at the start."""
    model = timm.create_model("nas_fmvit_t").eval()
    cfbs = [m for m in model.modules() if isinstance(m, fm.CFB)]
    fmbs = [m for m in model.modules() if isinstance(m, fm.FMB)]
    assert cfbs and fmbs
    x = torch.randn(2, cfbs[0].mixer.main.conv.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(cfbs[0](x), x)
        y = torch.randn(2, fmbs[0].mlp.fc1.main.conv.in_channels, 8, 8)
        assert torch.equal(fmbs[0].mlp(y), torch.zeros_like(y))
