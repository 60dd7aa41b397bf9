import pytest
import timm
import torch

import search_spaces
from supernets import mobilevitv3 as mv
from supernets.config import IDENTITY, ArchConfig, Choice, ConfigError
from supernets.layers import count_params, reparameterize
from tests.conftest import (
    TINY_MOBILEVIT_SPACE,
    assert_deploy_form_exports,
    pick_paths,
    random_supernet,
    randomise,
    train_and_deploy_outputs,
)

# specs/families.md §4.4 (no reparameterization in the reference: its inference count is the
# train count). The low-latency L2 variants have only the README's rounded counts.
PARITY = {"xxs": 1_249_448, "xs": 2_490_360, "s": 5_763_912, "050": 1_429_985, "075": 2_999_641, "100": 5_139_409}
README_L2 = {"xxs_l2": 1.1, "xs_l2": 2.3, "s_l2": 5.2}   # M

# MobileViTv1 channel configs (families.md §4.2, bracketed): layer1, layer2, (out, dim) x 3
V1_WIDTHS = {"xxs": (16, 24, (48, 64), (64, 80), (80, 96)), "xs": (32, 48, (64, 96), (80, 120), (96, 144)),
             "s": (32, 64, (96, 144), (128, 192), (160, 240))}
TIMM = {"xxs": "mobilevit_xxs", "xs": "mobilevit_xs", "s": "mobilevit_s",
        "050": "mobilevitv2_050", "075": "mobilevitv2_075", "100": "mobilevitv2_100"}


def _raw(variant: str) -> dict:
    return ArchConfig.load(search_spaces.variant_path("mobilevitv3", variant)).to_dict()


def _v3_off(variant: str) -> ArchConfig:
    """The variant with the v3 changes switched off (MobileViTv1 widths for the v1 flavour)."""
    raw = _raw(variant)
    raw["knobs"]["v3"] = False
    if variant in V1_WIDTHS:
        l1, l2, *mvit = V1_WIDTHS[variant]
        raw["width_step"] = 8
        raw["stages"][0]["width"], raw["stages"][1]["width"] = l1, l2
        for stage, (width, dim) in zip(raw["stages"][2:], mvit):
            stage.update(width=width, dim=dim)
    return ArchConfig.from_dict(raw)


@pytest.mark.parametrize("variant", sorted(PARITY))
def test_parameter_parity(variant):
    model = timm.create_model(f"nas_mobilevitv3_{variant}")
    assert count_params(model) == PARITY[variant]
    # the deploy form only folds BN into the preceding convs: 2C BN parameters become C biases
    folded = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert count_params(reparameterize(model)) == PARITY[variant] - folded


@pytest.mark.parametrize("variant", sorted(README_L2))
def test_low_latency_variants_have_two_layers_in_layer4_and_the_readme_size(variant):
    model = timm.create_model(f"nas_mobilevitv3_{variant}")
    assert len(model.stages[3].blocks) == 2
    assert round(count_params(model) / 1e6, 1) == README_L2[variant]


@pytest.mark.parametrize("variant", sorted(TIMM))
def test_v3_changes_off_reproduce_timm_mobilevit_with_mapped_weights(variant):
    """The shared blocks checked against timm's MobileViTv1/v2: same count, same outputs."""
    reference = randomise(timm.create_model(TIMM[variant]))
    ours = mv.MobileViTv3(_v3_off(variant)).eval()
    assert count_params(ours) == count_params(reference)
    ours.load_state_dict(mv.convert_timm_state_dict(reference.state_dict()), strict=True)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert (got - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("variant", mv.VARIANTS)
def test_deploy_form_equals_train_form(variant):
    deployed, want, got = train_and_deploy_outputs(f"nas_mobilevitv3_{variant}", 256)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.modules())


@pytest.mark.parametrize("variant", ["xxs", "050"])
def test_deploy_form_traces_with_torch_export(variant):
    assert_deploy_form_exports(f"nas_mobilevitv3_{variant}", 256)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["xs", "s", "xxs_l2", "xs_l2", "s_l2", "075", "100"])
def test_every_other_variant_traces_with_torch_export(variant):
    test_deploy_form_traces_with_torch_export(variant)


def test_unfold_fold_round_trip_and_odd_sides():
    x = torch.randn(2, 5, 8, 6)
    patches = mv.unfold(x)
    assert patches.shape == (2, 5, 4, 12)
    assert torch.equal(mv.fold(patches, (8, 6)), x)
    odd = mv.unfold(torch.randn(1, 3, 5, 5))      # resized to 6x6 first, as in the reference
    assert odd.shape == (1, 3, 4, 9) and mv.fold(odd, (5, 5)).shape == (1, 3, 5, 5)


def _cfg(variant: str, stage: int, **change) -> dict:
    raw = _raw(variant)
    raw["stages"][stage].update(change)
    return raw


@pytest.mark.parametrize("variant, stage, change, message", [
    ("xs", 3, {"dim": 122}, "stages[3].dim: 122 is not a multiple of the head count 4"),
    ("xs", 4, {"blocks": ["transformer"] * 13}, "stages[4].blocks: 13 transformer layers is out of range 0..12"),
    ("xs", 2, {"width": 100}, "stages[2].width: 100 is not a multiple of 16"),
    ("xs", 1, {"blocks": ["transformer"]}, "stages[1].blocks[0]: 'transformer' is not allowed here"),
    ("xs", 1, {"heads": 4}, "stages[1].heads: only a MobileViT stage"),
    ("xs", 2, {"dim": 0}, "stages[2].dim: 0 is not a positive integer"),
    ("xs", 2, {"depth": 3}, "stages[2]: unknown field(s) depth"),
])
def test_bad_family_knobs_name_the_field(variant, stage, change, message):
    with pytest.raises(ConfigError) as e:
        ArchConfig.from_dict(_cfg(variant, stage, **change))
    assert message in str(e.value)


def test_bad_family_wide_knobs_name_the_field():
    raw = _raw("xs")
    raw["knobs"]["flavour"] = "v4"
    with pytest.raises(ConfigError, match=r"knobs\.flavour: 'v4' is not one of v1, v2"):
        ArchConfig.from_dict(raw)


@pytest.fixture(params=["v1", "v2"])
def mobilevit_supernet(request):
    return random_supernet(TINY_MOBILEVIT_SPACE.replace("flavour: v1", f"flavour: {request.param}"))


def test_mobilevit_supernet_path_equals_inherited_subnet(mobilevit_supernet):
    net = mobilevit_supernet
    kinds = (("mv2",), (IDENTITY,), ("transformer", IDENTITY), (IDENTITY, "transformer"), ("transformer",) * 2)
    pick_paths(net, kinds)
    sub = net.subnet(Choice(tuple(s.max_width for s in net.space.stages), kinds)).eval()
    assert len(sub.stages[3].blocks) == 1 and len(sub.stages[1].blocks) == 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(sub(x), net.eval()(x), atol=1e-5)


def test_narrower_transformer_width_inherits_every_heads_leading_dims(mobilevit_supernet):
    net = mobilevit_supernet
    full = net.initial_choice()
    narrow = full.replace_knob(net.space, 3, "dim", 32).replace_width(4, 32)
    cfg = narrow.to_config(net.space)
    assert cfg.stages[3].knobs["dim"] == 32 and cfg.stages[2].knobs["dim"] == 32   # others stay at max
    sub = net.subnet(narrow).eval()
    if net.space.knobs["flavour"] == "v1":
        attn_super = net.net.stages[3].blocks[0].paths["transformer"].attn
        attn_sub = sub.stages[3].blocks[0].attn
        assert attn_sub.num_heads == attn_super.num_heads == 4 and attn_sub.head_dim == 8
        # interleaved heads: head h of the narrow attention is the first 8 dims of head h of the wide one
        q_wide = attn_super.q.weight.reshape(12, 4, 48)[:8, :, :32]
        assert torch.equal(attn_sub.q.weight.reshape(8, 4, 32), q_wide)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want, got = sub(x), reparameterize(sub)(x)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_op_graph_prices_the_frame_and_each_transformer_layer():
    cfg = ArchConfig.load(search_spaces.variant_path("mobilevitv3", "xs"))
    nodes = mv.op_nodes(cfg)
    kinds = [n.kind for n in nodes]
    assert kinds.count("frame") == 3 and kinds.count("transformer") == 2 + 4 + 3 and kinds.count("downsample") == 5
    # the frame op is the stage's MobileViT block without its layers: given them back, it is the
    # stage after its downsample
    stage = randomise(timm.create_model("nas_mobilevitv3_xs")).stages[2]
    frame = next(n for n in nodes if n.name == "stages.2.frame").make().eval()
    frame.load_state_dict({k: v for k, v in stage.state_dict().items() if not k.startswith(("downsample", "blocks"))},
                          strict=True)
    frame.blocks = stage.blocks
    x = torch.randn(1, 48, 64, 64)
    with torch.no_grad():
        assert torch.allclose(frame(stage.downsample(x)), stage(x), atol=1e-6)
    layer = next(n for n in nodes if n.name == "stages.2.blocks.0")
    assert layer.in_shape == (4, 256, 96) and layer.key == "transformer:v1:d96:h4:n256"
