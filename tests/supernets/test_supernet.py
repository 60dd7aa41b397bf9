import random

import pytest
import torch
import yaml

from supernets.config import IDENTITY, Choice, SearchSpace
from supernets.metapath import MetaPath
from supernets.registry import random_choice
from supernets.supernet import Supernet
from tests.conftest import (TINY_FASTVIT_SPACE, TINY_FMVIT_SPACE, TINY_IFORMER_SPACE, TINY_MOBILEVIT_SPACE, TINY_SPACE,
                            pick_paths, randomise)


def _trained_like(net: Supernet, seed=0):
    """Random non-trivial weights/statistics/α so equivalences are not vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 if name.endswith(".alpha") else 0.2))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net.eval()


def test_slots_are_metapaths_with_the_paper_choices(tiny_space):
    net = Supernet(tiny_space)
    paths = net.metapaths()
    assert [len(s) for s in paths] == [2, 1, 2, 2]
    assert paths[0][0].choices == ("mb4d", "identity") and paths[3][1].choices == ("mb4d", "mb3d", "identity")
    assert len(list(net.arch_parameters())) == 7


def test_subnet_with_inherited_weights_equals_the_supernet_path(tiny_space):
    """With hard mixing in eval mode the supernet runs the argmax path of every slot; the concrete
    subnet of that choice must compute exactly the same function."""
    net = _trained_like(Supernet(tiny_space, img_size=64))
    kinds = (("mb4d", IDENTITY), (IDENTITY,), ("mb4d", "mb3d"), ("mb3d", "mb3d"))
    pick_paths(net, kinds)
    choice = Choice(tuple(s.max_width for s in tiny_space.stages), kinds)
    sub = net.subnet(choice).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(sub(x), net(x), atol=1e-5)


def test_narrow_subnet_takes_prefix_channels(tiny_space):
    net = _trained_like(Supernet(tiny_space, img_size=64))
    choice = net.initial_choice().replace_width(3, 32)
    sub = net.subnet(choice)
    w_super = net.net.stages[3].downsample.conv.weight
    w_sub = sub.stages[3].downsample.conv.weight
    assert w_sub.shape[0] == 32 and torch.equal(w_sub, w_super[:32, : w_sub.shape[1]])


def test_channel_reorder_preserves_the_function_and_sorts_importance(tiny_space):
    net = _trained_like(Supernet(tiny_space, img_size=64))
    net.set_mixing("soft", 1.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        perms = net.reorder_channels()
        after = net(x)
    assert torch.allclose(before, after, atol=1e-5)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms)
    # after reordering, the identity permutation is what a second reorder finds
    again = net.reorder_channels()
    assert all(torch.equal(p, torch.arange(len(p))) for p in again)


@pytest.mark.parametrize("mode", ["soft", "hard", "uniform"])
def test_gumbel_mixing_trains_alpha(tiny_space, mode):
    torch.manual_seed(0)
    net = Supernet(tiny_space, img_size=64).train()
    net.set_mixing(mode, 2.0)
    net(torch.randn(4, 3, 64, 64)).logsumexp(1).sum().backward()
    grads = [p.grad for p in net.arch_parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


class _Probe(torch.nn.Module):
    """A candidate block that records each call in `calls` and doubles its input."""

    def __init__(self, name, calls):
        super().__init__()
        self.name, self.calls = name, calls

    def forward(self, x):
        self.calls.append(self.name)
        return x * 2


def test_hard_mixing_runs_one_path():
    calls = []

    mp = MetaPath({"a": _Probe("a", calls), "b": _Probe("b", calls)}, ("a", "b", IDENTITY)).train()
    mp.mode = "hard"
    for _ in range(20):
        mp(torch.ones(1, 1, 2, 2))
    assert len(calls) <= 20
    calls.clear()
    mp.mode = "soft"
    mp(torch.ones(1, 1, 2, 2))
    assert sorted(calls) == ["a", "b"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["uniform", "hard", "soft"])
def test_every_mixing_trains_on_a_gpu(tiny_space, mode):
    """A training step of every mixing mode on CUDA (uniform draws on the host's RNG and once
    mixed a CPU one-hot into GPU weights)."""
    net = Supernet(tiny_space.replace(resolution=32), num_classes=10).cuda().train()
    net.set_mixing(mode, 1.0)
    loss = net(torch.randn(2, 3, 32, 32, device="cuda")).logsumexp(-1).mean()
    loss.backward()
    assert torch.isfinite(loss) and any(a.grad is not None for a in net.arch_parameters())


def test_uniform_mixing_trains_every_option_equally_often_whatever_alpha_says():
    """Uniform mode's promise (single-path one-shot): the option run is drawn uniformly, not from
    α, and runs at its own scale (weight 1 in value); hard mode draws what α favours."""
    calls = []

    torch.manual_seed(0)
    mp = MetaPath({"a": _Probe("a", calls), "b": _Probe("b", calls)}, ("a", "b", IDENTITY)).train()
    with torch.no_grad():
        mp.alpha.copy_(torch.tensor([6.0, 0.0, 0.0]))   # α all but certain of "a"
    x = torch.ones(1, 1, 2, 2)
    counts = {}
    for mode in ("uniform", "hard"):
        mp.mode = mode
        calls.clear()
        outs = [mp(x) for _ in range(600)]
        counts[mode] = {k: calls.count(k) for k in ("a", "b")}
        assert len(calls) <= 600 and all(torch.equal(o.detach(), x * 2) or torch.equal(o.detach(), x) for o in outs)
    assert all(150 < n < 250 for n in counts["uniform"].values()), counts   # 200 expected each
    assert counts["hard"]["a"] > 580, counts
    mp.mode = "uniform"
    mp.eval()
    calls.clear()
    mp(x)
    assert calls == ["a"]   # eval runs α's argmax, as hard does


def test_importance_follows_the_paper(tiny_space):
    net = Supernet(tiny_space)
    with torch.no_grad():
        net.metapaths()[2][0].alpha.copy_(torch.log(torch.tensor([0.5, 0.3, 0.2])))
    imp = net.slot_importance()
    assert imp[2][0] == pytest.approx((0.5 + 0.3) / 0.2)
    assert imp[0][0] == pytest.approx(1.0)  # zero logits: p4D = pI


@pytest.mark.parametrize("space_text", [
    pytest.param(TINY_SPACE, id="efficientformer"), pytest.param(TINY_FASTVIT_SPACE, id="fastvit"),
    pytest.param(TINY_IFORMER_SPACE, id="iformer"),
    pytest.param(TINY_MOBILEVIT_SPACE, id="mobilevitv3", marks=pytest.mark.slow),   # 4-6 s each: the full suite
    pytest.param(TINY_FMVIT_SPACE, id="fmvit", marks=pytest.mark.slow)])
def test_a_masked_width_computes_exactly_the_narrow_subnet(space_text):
    """Width training's promise: with one width per stage picked (hard mode), the supernet with
    its channel masks is the function of the sub-network that inherits those widths."""
    space = SearchSpace.from_dict(yaml.safe_load(space_text))
    for seed in range(4):   # one draw passed for FMViT while other widths did not (fixed-count groups)
        _check_masked_width_is_the_subnet(space, seed)


def _check_masked_width_is_the_subnet(space, seed):
    net = randomise(Supernet(space, img_size=64, train_widths=True))
    rng = random.Random(seed)
    choice = random_choice(space, rng)
    kinds = choice.kinds
    if space.family == "fastvit":
        # A FastViT stage that can choose attention opens with a RepCPE in the supernet, but a
        # sub-network keeps it only if it has attention (the published rule), at any width.
        kinds = kinds[:3] + (("attention",) + kinds[3][1:],)
    choice = Choice(choice.widths, kinds)                   # knobs: the supernet's own values
    pick_paths(net, choice.kinds)
    with torch.no_grad():
        for j, wc in net.width_choices.items():
            wc.alpha.copy_(torch.tensor([5.0 if w == choice.widths[int(j)] else 0.0 for w in wc.widths]))
        for stage in net.knob_choices():                    # α-searched knobs at the supernet's value
            for kc in stage.values():
                kc.alpha.copy_(torch.tensor([5.0 if i == len(kc.values) - 1 else 0.0 for i in range(len(kc.values))]))
    assert len(net.width_choices) and any(w < space.stages[j].max_width for j, w in enumerate(choice.widths))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), net.subnet(choice).eval()(x), atol=1e-4, rtol=1e-4)


def test_width_alpha_trains_and_ranks_the_width_action(tiny_space):
    torch.manual_seed(0)
    net = Supernet(tiny_space, img_size=64, train_widths=True).train()
    for mode in ("soft", "hard", "uniform"):
        net.set_mixing(mode, 1.0)
        net.zero_grad()
        # A hard step that samples a stage's narrowest width teaches its α nothing (the wider
        # channels are zero before their masks, so every option sees the same gradient), so
        # accumulate a few steps.
        for _ in range(6):
            net(torch.randn(4, 3, 64, 64)).logsumexp(1).sum().backward()
        assert all(float(wc.alpha.grad.abs().sum()) > 1e-6 for wc in net.width_choices.values()), mode
    with torch.no_grad():
        net.width_choices["3"].alpha.copy_(torch.tensor([3.0, 0.0, 0.0]))   # stage 4 prefers its narrowest width
    assert net.width_importance(3, 64) < net.width_importance(2, 48)   # each at its widest
    assert Supernet(tiny_space).width_importance(3, 64) is None           # trained at full width: no width α
