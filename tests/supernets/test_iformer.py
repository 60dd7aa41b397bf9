import pytest
import timm
import torch

import search_spaces
from supernets import iformer as ifm
from supernets.config import IDENTITY, ArchConfig, Choice, ConfigError
from supernets.layers import RepCPE, count_params, reparameterize
from tests.conftest import (
    TINY_IFORMER_SPACE,
    assert_deploy_form_exports,
    pick_paths,
    random_supernet,
    randomise,
    train_and_deploy_outputs,
)

# specs/families.md §5.5: train -> fused (no distillation head; H with its layer scale 1e-6)
PARITY = {"t": (2_886_456, 2_873_032), "s": (6_563_368, 6_540_152), "m": (8_907_424, 8_879_128),
          "l": (14_779_808, 14_737_624), "l2": (24_518_984, 24_455_016), "h": (99_596_632, 99_436_168)}


@pytest.mark.parametrize("variant", sorted(PARITY))
def test_parameter_parity_train_and_fused(variant):
    model = timm.create_model(f"nas_iformer_{variant}")
    train, fused = PARITY[variant]
    assert count_params(model) == train
    assert count_params(reparameterize(model)) == fused


def _deploy_check(variant: str) -> None:
    deployed, want, got = train_and_deploy_outputs(f"nas_iformer_{variant}", 224)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d, RepCPE)) for m in deployed.modules())


@pytest.mark.parametrize("variant", ["t", "s", "m", "l"])
def test_deploy_form_equals_train_form(variant):
    _deploy_check(variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["l2", "h"])
def test_deploy_form_equals_train_form_large(variant):
    _deploy_check(variant)


def test_distillation_head_fuses_into_one_linear_averaging_both():
    raw = ArchConfig.load(search_spaces.variant_path("iformer", "t")).to_dict()
    raw["head"]["distillation"] = True
    model = randomise(ifm.IFormer(ArchConfig.from_dict(raw)))
    assert count_params(model) == PARITY["t"][0] + 257_512           # a second BN_Linear
    deployed = reparameterize(model)
    assert count_params(deployed) == PARITY["t"][1]                   # averaged into one Linear
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(deployed(x), model(x), atol=1e-4 * model(x).abs().max().item())


@pytest.mark.parametrize("variant", ["t", "m"])
def test_deploy_form_traces_with_torch_export(variant):
    assert_deploy_form_exports(f"nas_iformer_{variant}", 224)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["s", "l", "l2"])
def test_every_other_variant_traces_with_torch_export(variant):
    test_deploy_form_traces_with_torch_export(variant)


def test_shma_is_single_head_attention_with_sigmoid_value_and_gate():
    shma = randomise(ifm.SHMA(32, reduction=4))
    x = torch.randn(1, 32, 5, 5)
    with torch.no_grad():
        q, k = shma.q(x).flatten(2)[0], shma.k(x).flatten(2)[0]          # (8, 25)
        v, gate = shma.v(x).sigmoid().flatten(2)[0], shma.gate(x).sigmoid().flatten(2)[0]
        attn = torch.softmax(q.T @ k / 8 ** 0.5, dim=-1)                  # (25 queries, 25 keys)
        want = shma.proj(((v @ attn.T) * gate).reshape(1, 32, 5, 5))
        assert torch.allclose(shma(x), want, atol=1e-5)


def _cfg(variant: str, stage: int, **change):
    raw = ArchConfig.load(search_spaces.variant_path("iformer", variant)).to_dict()
    raw["stages"][stage].update(change)
    return raw


@pytest.mark.parametrize("variant, stage, change, message", [
    ("m", 2, {"r": 0}, "stages[2].r: 0 is not a positive integer"),
    ("m", 3, {"r": 5}, "stages[3].r: 384 channels do not divide by the q/k reduction 5"),
    ("m", 3, {"blocks": [{"kind": "shma", "r": 4}]}, "unknown knob(s) r"),
    ("m", 2, {"width": 200}, "not a multiple of 16"),
    ("m", 1, {"blocks": ["mb4d"]}, "unknown block kind 'mb4d'"),
    ("m", 1, {"blocks": [{"kind": "conv", "ratio": -1}]}, "ratio: -1 is not an expansion ratio"),
])
def test_bad_family_knobs_name_the_field(variant, stage, change, message):
    with pytest.raises(ConfigError, match=rf"stages\[{stage}\]") as e:
        ArchConfig.from_dict(_cfg(variant, stage, **change))
    assert message in str(e.value)


@pytest.fixture
def iformer_supernet():
    return random_supernet(TINY_IFORMER_SPACE)


def test_iformer_supernet_path_equals_inherited_subnet(iformer_supernet):
    net = iformer_supernet
    kinds = (("conv",), (IDENTITY,), ("shma", "conv"), (IDENTITY, "shma"))
    pick_paths(net, kinds)
    sub = net.subnet(Choice(tuple(s.max_width for s in net.space.stages), kinds)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(sub(x), net.eval()(x), atol=1e-5)


def test_larger_reduction_inherits_the_leading_qk_channels_and_channel_reorder_preserves_function(iformer_supernet):
    net = iformer_supernet
    choice = Choice((32, 32, 48, 64), (("conv",), ("conv",), ("shma", "shma"), ("shma", "conv")))
    choice = choice.replace_knob(net.space, 3, "r", 4)
    sub = net.subnet(choice)
    q_super = net.net.stages[3].blocks[0].paths["shma"].attn.q.conv.weight      # 64 -> 32 (R = 2)
    assert torch.equal(sub.stages[3].blocks[0].attn.q.conv.weight, q_super[:16])  # 64 -> 16 (R = 4)
    x = torch.randn(2, 3, 64, 64)
    net.set_mixing("soft", 1.0)
    with torch.no_grad():
        before = net.eval()(x)
        net.reorder_channels()
        assert torch.allclose(net(x), before, atol=1e-4)


def test_op_graph_keys_carry_r_only_for_shma():
    cfg = ArchConfig.load(search_spaces.variant_path("iformer", "t"))
    keys = [n.key for n in ifm.op_nodes(cfg)]
    assert "conv:c128:14x14:ratio3" in keys and "shma:c128:14x14:r2:ratio2" in keys and "shma:c256:7x7:r4:ratio2" in keys
    assert keys[0].startswith("if-stem") and keys[-1].startswith("if-head") and len(keys) == 1 + 3 + 16 + 1
