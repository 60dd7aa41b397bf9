"""The nas_* models through timm's interface: the behaviours issue #15 names, with hand-written
expectations (timm's own suite runs in tests/supernets/timm_suite)."""
import pytest
import timm
import torch
from timm.layers import DropPath

from supernets.registry import family_names, get_family

for _family in family_names():
    get_family(_family)

# one small variant per family: (name, native resolution, stage widths from its YAML)
SMALL = [("nas_efficientformer_l1", 224, [48, 96, 224, 448]), ("nas_fastvit_t8", 256, [48, 96, 192, 384]),
         ("nas_iformer_t", 224, [32, 64, 128, 256]), ("nas_fmvit_t", 224, [32, 80, 160, 320]),
         ("nas_mobilevitv3_xxs", 256, [16, 24, 64, 80, 128])]


@pytest.mark.parametrize("name,res,widths", SMALL, ids=[s[0] for s in SMALL])
def test_in_chans_and_num_classes_reach_the_model(name, res, widths):
    model = timm.create_model(name, in_chans=1, num_classes=7).eval()
    assert model(torch.randn(2, 1, res, res)).shape == (2, 7)
    assert model.in_chans == 1 and model.num_classes == 7


@pytest.mark.parametrize("name", [s[0] for s in SMALL])
def test_unknown_arguments_and_pretrained_weights_are_refused(name):
    with pytest.raises(TypeError):
        timm.create_model(name, not_an_argument=1)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model(name, pretrained=True)


@pytest.mark.parametrize("name,res,widths", SMALL, ids=[s[0] for s in SMALL])
def test_features_only_gives_the_chosen_stages_maps(name, res, widths):
    last = len(widths) - 1
    model = timm.create_model(name, features_only=True, out_indices=(1, last)).eval()
    maps = model(torch.randn(1, 3, res, res))
    stride = 4 if len(widths) == 4 else 2   # MobileViT's first stage is at stride 2, the others' at 4
    assert [m.shape[1] for m in maps] == [widths[1], widths[last]]
    assert [m.shape[-1] for m in maps] == [res // (stride * 2), res // 32]
    assert model.feature_info.channels() == [widths[1], widths[last]]


def test_pretrained_cfg_describes_the_variant():
    ef = timm.create_model("nas_efficientformer_l1").pretrained_cfg
    assert ef["input_size"] == (3, 224, 224) and ef["fixed_input_size"] and ef["pool_size"] == (7, 7)
    assert ef["classifier"] == ("head.head", "head.head_dist")   # L1 is published with a distillation head
    fv = timm.create_model("nas_fastvit_t8").pretrained_cfg
    assert fv["input_size"] == (3, 256, 256) and not fv["fixed_input_size"] and fv["classifier"] == "head.fc"
    assert fv["first_conv"] == "stem.0.conv_kxk.0.conv"


def test_drop_path_rate_adds_stochastic_depth():
    plain = timm.create_model("nas_fastvit_t8")
    dropped = timm.create_model("nas_fastvit_t8", drop_path_rate=0.1)
    assert not any(isinstance(m, DropPath) for m in plain.modules())
    rates = [m.drop_prob for m in dropped.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.1)


def test_unpooled_and_pooled_outputs_after_reset():
    model = timm.create_model("nas_iformer_t").eval()
    x = torch.randn(1, 3, 224, 224)
    model.reset_classifier(0)
    assert model(x).shape == (1, 256)   # pooled pre-logits: the last stage's width
    model.reset_classifier(0, "")
    assert model(x).shape == (1, 256, 7, 7)
    model.reset_classifier(5, "avg")
    assert model(x).shape == (1, 5) and model.get_classifier().fc.out_features == 5   # BN_Linear; T has no distillation head
