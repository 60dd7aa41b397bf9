import pytest
import timm
import torch

import search_spaces
from supernets import fastvit as fv
from supernets.config import IDENTITY, ArchConfig, Choice, ConfigError
from supernets.layers import count_params, reparameterize
from tests.conftest import (
    TINY_FASTVIT_SPACE,
    assert_deploy_form_exports,
    largest_in_full_suite,
    pick_paths,
    random_supernet,
    randomise,
    timm_pair,
    train_and_deploy_outputs,
)

# specs/families.md §3.9: train -> deploy (reparameterized) parameters, official repo = timm
PARITY = {
    "t8": (4_026_232, 3_996_040), "t12": (7_553_704, 7_508_840), "s12": (9_473_576, 9_428_712),
    "sa12": (11_580_968, 11_545_320), "sa24": (21_554_216, 21_501_288), "sa36": (31_527_464, 31_457_256),
    "ma36": (44_068_004, 43_984_632),
}


@pytest.mark.parametrize("variant", largest_in_full_suite(sorted(PARITY), {"sa24", "sa36", "ma36"}))
def test_parameter_parity_train_and_deploy(variant):
    ours = timm.create_model(f"nas_fastvit_{variant}")
    train, deploy = PARITY[variant]
    assert count_params(ours) == train == count_params(timm.create_model(f"fastvit_{variant}"))
    assert count_params(reparameterize(ours)) == deploy


@pytest.mark.parametrize("variant", ["t8", "sa12"])
def test_outputs_equal_timm_with_mapped_weights_before_and_after_reparameterization(variant):
    reference, ours = timm_pair(fv, variant, "fastvit")
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got, deployed = reference(x), ours(x), reparameterize(ours)(x)
        reference.apply(lambda m: m.reparameterize() if hasattr(m, "reparameterize") else None)
        timm_deployed = reference(x)
    scale = max(1.0, want.abs().max().item())
    assert (got - want).abs().max() <= 1e-5 * scale
    assert (deployed - want).abs().max() <= 1e-5 * scale
    assert (deployed - timm_deployed).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize("variant", largest_in_full_suite(sorted(PARITY), {"sa24", "sa36", "ma36"}))
def test_deploy_form_equals_train_form_and_is_reparameterized(variant):
    deployed, want, got = train_and_deploy_outputs(f"nas_fastvit_{variant}", 256)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    kinds = {type(m) for m in deployed.modules()}
    assert not kinds & {fv.MobileOneBlock, fv.ReparamLargeKernelConv, fv.RepMixer, fv.RepCPE}
    # RepMixer collapses to one depthwise 3x3 conv per block
    assert isinstance(deployed.stages[0].blocks[0].token_mixer, torch.nn.Conv2d)


@pytest.mark.parametrize("variant", ["t8", "sa12"])
def test_deploy_form_traces_with_torch_export(variant):
    assert_deploy_form_exports(f"nas_fastvit_{variant}", 256)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["t12", "s12", "sa24", "sa36", "ma36"])
def test_every_other_variant_traces_with_torch_export(variant):
    test_deploy_form_traces_with_torch_export(variant)


def _cfg(variant: str, stage: int, **change):
    raw = ArchConfig.load(search_spaces.variant_path("fastvit", variant)).to_dict()
    raw["stages"][stage].update(change)
    return raw


@pytest.mark.parametrize("variant, stage, change, message", [
    ("ma36", 0, {"blocks": ["attention"]}, "76 is not a multiple of the head dim 32"),
    ("sa12", 3, {"width": 520}, "not a multiple of 16"),
    ("sa12", 3, {"blocks": [{"kind": "attention", "heads": 4}]}, "unknown knob(s) heads"),
    ("sa12", 3, {"blocks": ["mb4d"]}, "unknown block kind 'mb4d'"),
])
def test_bad_family_knobs_name_the_field(variant, stage, change, message):
    with pytest.raises(ConfigError, match=rf"stages\[{stage}\]") as e:
        ArchConfig.from_dict(_cfg(variant, stage, **change))
    assert message in str(e.value)


def test_repcpe_opens_only_stages_with_attention():
    t8 = timm.create_model("nas_fastvit_t8")
    sa12 = timm.create_model("nas_fastvit_sa12")
    assert all(isinstance(s.pos_emb, torch.nn.Identity) for s in t8.stages)
    assert isinstance(sa12.stages[3].pos_emb, fv.RepCPE)
    kinds = [n.kind for n in fv.op_nodes(sa12.config)]
    assert kinds[:1] == ["stem"] and kinds[-1] == "head" and kinds.count("cpe") == 1




@pytest.fixture
def fastvit_supernet():
    return random_supernet(TINY_FASTVIT_SPACE)


def test_patch_embedding_reads_input_channel_half_the_output_index_wrapping_around():
    narrow, wide = randomise(fv.PatchEmbed(32, 128)), fv.PatchEmbed(64, 128).eval()
    wide.load_state_dict(narrow.state_dict())   # same shapes: both read 64 channels
    x = torch.randn(2, 32, 16, 16)
    with torch.no_grad():   # out = 4 x in: channel o reads (o // 2) mod 32, i.e. the input repeated
        assert torch.allclose(narrow(x), wide(torch.cat([x, x], 1)), atol=1e-6)
        # out < 2 x in: the leading out/2 input channels are read, the rest are not
        short = fv.PatchEmbed(96, 64).eval()
        y = torch.cat([x, torch.randn(2, 64, 16, 16)], 1)
        assert torch.equal(short(y), short(torch.cat([x, torch.zeros(2, 64, 16, 16)], 1)))


def test_fastvit_supernet_path_equals_inherited_subnet_with_attention_and_cpe(fastvit_supernet):
    net = fastvit_supernet
    kinds = (("repmixer", IDENTITY), ("repmixer",), (IDENTITY, "repmixer"), ("repmixer", "attention"))
    pick_paths(net, kinds)
    sub = net.subnet(Choice((64, 64, 128, 128), kinds)).eval()
    assert isinstance(sub.stages[3].pos_emb, fv.RepCPE)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(sub(x), net.eval()(x), atol=1e-5)


def test_narrow_fastvit_subnets_inherit_prefixes_and_reparameterize(fastvit_supernet):
    net = fastvit_supernet
    kinds = (("repmixer", "repmixer"), ("repmixer",), ("repmixer", IDENTITY), ("attention", IDENTITY))
    sub = net.subnet(Choice((32, 64, 32, 128), kinds)).eval()   # 64 -> 32 reads a prefix, 32 -> 128 wraps
    w_super = net.net.stages[3].blocks[0].paths["attention"].token_mixer.q.weight
    w_sub = sub.stages[3].blocks[0].token_mixer.q.weight
    assert torch.equal(w_sub, w_super[:128, :128])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want, got = sub(x), reparameterize(sub)(x)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    assert [p.tolist() for p in net.reorder_channels()] == [list(range(s.max_width)) for s in net.space.stages]
