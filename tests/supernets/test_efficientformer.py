import pytest
import timm
import torch

import search_spaces

from supernets import efficientformer as ef
from supernets.layers import count_params, reparameterize
from tests.conftest import largest_in_full_suite, timm_pair

# specs/families.md §2.8 (train, with distillation head) and §1 (BN folded, both heads)
PARITY = {"l1": (12_289_928, 12.258), "l3": (31_406_000, 31.348), "l7": (82_229_328, 82.140)}


@pytest.mark.parametrize("variant", largest_in_full_suite(sorted(PARITY), {"l7"}))
def test_parameter_parity_with_timm(variant):
    ours = timm.create_model(f"nas_efficientformer_{variant}")
    reference = timm.create_model(f"efficientformer_{variant}")
    train, deploy_m = PARITY[variant]
    assert count_params(ours) == train == count_params(reference)
    assert round(count_params(reparameterize(ours)) / 1e6, 3) == deploy_m


@pytest.mark.parametrize("variant", ["l1", "l3"])
def test_outputs_equal_timm_with_mapped_weights(variant):
    reference, ours = timm_pair(ef, variant, "efficientformer")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got, deployed = reference(x), ours(x), reparameterize(ours)(x)
    assert (got - want).abs().max() <= 1e-5
    assert (deployed - want).abs().max() <= 1e-5 * max(1.0, want.abs().max())


def test_deploy_form_folds_every_batchnorm():
    deployed = reparameterize(timm.create_model("nas_efficientformer_l1"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.modules())


def test_attention_bias_table_follows_resolution():
    cfg = ef.ArchConfig.load(search_spaces.variant_path("efficientformer", "l1"))
    model = ef.EfficientFormer(cfg, img_size=64)
    attn = model.stages[3].blocks[3].token_mixer
    assert attn.attention_biases.shape == (8, 4)  # 2x2 token grid at 64 px
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_mb3d_in_stage_three_reshapes_back_for_the_embedding():
    cfg = ef.ArchConfig.from_dict({
        "family": "efficientformer", "resolution": 64, "num_classes": 5,
        "stages": [{"width": 16, "blocks": ["mb4d"]}, {"width": 32, "blocks": []},
                   {"width": 32, "blocks": ["mb4d", "mb3d"]}, {"width": 48, "blocks": ["mb4d"]}]})
    model = ef.EfficientFormer(cfg).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    kinds = [n.kind for n in ef.op_nodes(cfg)]
    assert kinds == ["stem", "mb4d", "embed", "embed", "mb4d", "reshape", "mb3d", "reshape", "embed", "mb4d", "head"]
