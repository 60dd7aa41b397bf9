"""The Core ML cost model: features, additivity over LUT ops, the fit, the shipped tables."""
import random

import numpy as np
import pytest
from torch import nn

import search_spaces
from lut import build, estimate, features, graph, published
from lut.devices import SHIPPED_TABLES
from lut.features import FEATURES
from lut.table import LatencyTable
from nas.cli import main
from nas.core.errors import UserError
from supernets.config import ArchConfig, SearchSpace
from supernets.layers import reparameterize
from supernets.registry import family_names, get_family, random_choice
from tests.conftest import TINY_FMVIT_SPACE, TINY_IFORMER_SPACE, TINY_MOBILEVIT_SPACE, TINY_SPACE, TINY_FASTVIT_SPACE

FAMILIES = ["efficientformer", "fastvit", "mobilevitv3", "iformer", "fmvit"]   # ids of the tiny spaces (tests/conftest.py)


class _Attention(nn.Module):
    """Dense conv, depthwise conv, LayerNorm, a linear, q @ k^T, softmax, a permute."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.LayerNorm(8)
        self.qkv = nn.Linear(8, 16, bias=False)

    def forward(self, x):
        x = self.dw(self.conv(x))                            # (1, 8, 4, 4)
        t = self.norm(x.flatten(2).permute(0, 2, 1))         # (1, 16, 8)
        q, k = self.qkv(t).split(8, dim=-1)
        return (q @ k.transpose(1, 2)).softmax(-1)           # (1, 16, 16)


def test_features_are_read_off_the_aten_ops():
    f = features.profile(_Attention(), (1, 3, 4, 4))
    mb = lambda n: n * features.BYTES_PER_ELEMENT / 1e6   # noqa: E731
    conv_macs, linear_macs, attn_macs = 8 * 3 * 9 * 16, 16 * 8 * 16, 16 * 16 * 8
    assert f["dense_gmacs"] == pytest.approx((conv_macs + linear_macs) / 1e9)
    assert f["attention_gmacs"] == pytest.approx(attn_macs / 1e9)    # q @ k^T: two activations
    assert f["depthwise_mb"] == pytest.approx(mb(128 + 128))
    assert f["norm_mb"] == pytest.approx(mb(128 + 128))
    assert f["softmax_mb"] == pytest.approx(mb(256 + 256))
    assert f["layout_mb"] == pytest.approx(mb(128 + 128))   # the permute and k's transpose; a weight's is free
    assert f["weight_mb"] == pytest.approx(mb(sum(p.numel() for p in _Attention().parameters())))


def test_swish_is_read_off_apart_and_still_priced_as_an_activation():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.SiLU(), nn.Hardswish(), nn.GELU(), nn.ReLU())
    f = features.profile(model, (1, 3, 4, 4))
    per_activation = 2 * 128 * features.BYTES_PER_ELEMENT / 1e6          # in and out, 8 x 4 x 4 each
    assert f["swish_mb"] == pytest.approx(2 * per_activation)             # SiLU and HardSwish, not GELU
    assert f["activation_mb"] == pytest.approx(3 * per_activation)        # all three; ReLU is elementwise
    assert estimate.CostModel.load().op_ms(f, estimate.REFERENCE_SOURCE) == pytest.approx(
        estimate.CostModel.load().op_ms({**f, "swish_mb": 0.0}, estimate.REFERENCE_SOURCE))   # not priced


def test_swish_prices_are_each_protocols_own_and_said_beside_an_unseen_familys_estimate(capsys):
    """Rows whose SiLU/HardSwish cost 8x the shared activation rate in one protocol and 2x in
    another give those prices back; the shipped model finds the iOS 16 stack's well above
    iFormer's (experiments/apple_estimate/activation_trial.md), and `estimate-model` says so for
    an architecture the calibration lacks, built on SiLU."""
    w = np.full(len(FEATURES), 0.05)
    w[[FEATURES.index(k) for k in estimate.STREAMED]] = 0.01
    w[FEATURES.index("dense_gmacs")] = w[FEATURES.index("attention_gmacs")] = 0.3
    x, _, sources, scale, over = _synthetic_rows(w)
    rng = np.random.default_rng(1)
    swish = rng.uniform(0, 1, len(x)) * x[:, FEATURES.index("activation_mb")]
    swish[rng.uniform(size=len(x)) < 0.5] = 0.0                     # half the models have none
    price = {estimate.REFERENCE_SOURCE: 0.08, "B": 0.02}              # "C": no row of it holds Swish
    swish[np.array(sources) == "C"] = 0.0
    y = np.array([scale[s] * (xi @ w + (price.get(s, 0.01) - 0.01) * m) + over[s]
                  for xi, s, m in zip(x, sources, swish)])
    rows = [published.Row(f"m{i}", f"m{i}", s, 224, ms) for i, (s, ms) in enumerate(zip(sources, y))]
    feats = {(f"m{i}", 224): {**dict(zip(FEATURES, xi)), "swish_mb": m} for i, (xi, m) in enumerate(zip(x, swish))}
    got = published.swish_prices(rows, feats)
    assert set(got) == set(price)
    assert [got[s] for s in price] == pytest.approx([scale[s] * price[s] for s in price], rel=0.05)

    shipped = estimate.CostModel.load()
    iphone12, iphone13 = estimate.DEVICE_SOURCE["iphone12"], estimate.DEVICE_SOURCE["iphone13"]
    charged = {s: shipped.scales[s] * shipped.weights["activation_mb"] for s in (iphone12, iphone13)}
    assert shipped.swish_ms_per_mb[iphone12] > 3 * charged[iphone12]
    assert shipped.swish_ms_per_mb[iphone13] / charged[iphone13] < shipped.swish_ms_per_mb[iphone12] / charged[iphone12]
    assert shipped.swish_note({"swish_mb": 0.0}, iphone12) is None
    assert main(["lut", "estimate-model", "--device", "iphone12", "--timm", "nas_mobilevitv3_xs"]) == 0
    out = capsys.readouterr().out
    assert "SiLU/HardSwish:" in out and "charged as any activation" in out and "depends on the iOS stack" in out
    ratio = float(out.split("rows price them at ")[1].split("x that")[0])
    assert ratio == pytest.approx(shipped.swish_ms_per_mb[iphone12] / charged[iphone12], abs=0.05)


@pytest.mark.parametrize("space_text", [TINY_SPACE, TINY_FASTVIT_SPACE, TINY_MOBILEVIT_SPACE, TINY_IFORMER_SPACE,
                                        TINY_FMVIT_SPACE], ids=FAMILIES)
def test_a_network_estimate_is_the_sum_of_its_ops(space_text, tmp_path):
    """The op table prices a network as the model prices the whole network (features add up)."""
    path = tmp_path / "space.yaml"
    path.write_text(space_text)
    space = SearchSpace.load(path)
    model = estimate.CostModel.load()
    source = estimate.DEVICE_SOURCE["iphone12"]
    table = build.new_table("iphone12", space.resolution, 1, "coreml")
    for seed in range(3):
        cfg = random_choice(space, random.Random(seed)).to_config(space, 10)
        estimate.estimate_ops(table, build.ops_for([cfg]), model, source)
        estimate.describe_table(table, model, source)
        whole = features.profile(reparameterize(get_family(cfg.family).build(cfg)),
                                 (1, 3, space.resolution, space.resolution))
        assert table.predict(cfg) == pytest.approx(model.network_ms(whole, source), rel=0.02)


def _synthetic_rows(w, n_rows=90, seed=0):
    """Rows of three sources whose ms are scale * x @ w + overhead, and those factors."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 10, size=(n_rows, len(w)))
    sources = [estimate.REFERENCE_SOURCE, "B", "C"] * (n_rows // 3)
    scale = {estimate.REFERENCE_SOURCE: 1.0, "B": 1.4, "C": 0.8}
    over = {estimate.REFERENCE_SOURCE: 0.5, "B": 1.0, "C": 0.2}
    y = np.array([scale[s] * xi @ w + over[s] for xi, s in zip(x, sources)])
    return x, y, sources, scale, over


def test_fit_recovers_weights_scales_and_overheads_and_shrugs_off_an_outlier():
    rng = np.random.default_rng(0)
    w = rng.uniform(0.01, 0.2, size=len(FEATURES))
    w[[1, 3]] = 0.0
    x, y, sources, scale, over = _synthetic_rows(w)
    y[0] *= 20                                                   # one model off the Neural Engine
    fitted = estimate.fit(x, y, sources, streamed=(), floors={})  # every weight free
    assert [fitted.weights[k] for k in FEATURES] == pytest.approx(list(w), abs=2e-3)
    for s in scale:
        assert fitted.scales[s] == pytest.approx(scale[s], rel=0.02)
        assert fitted.overheads[s] == pytest.approx(over[s], abs=0.05)


def test_streamed_ops_share_one_rate_even_a_kind_no_row_has():
    """The shipped fit gives the streamed kinds one weight, found even for a kind no calibration
    row moves bytes through: an unseen architecture's op is priced at the shared rate, not at the
    0 a free weight is left at."""
    w = np.full(len(FEATURES), 0.05)
    w[[FEATURES.index(k) for k in estimate.STREAMED]] = 0.01
    w[FEATURES.index("dense_gmacs")] = w[FEATURES.index("attention_gmacs")] = 0.3   # above the floor
    x, y, sources, _, _ = _synthetic_rows(w)
    x[:, FEATURES.index("pool_mb")] = 0.0                           # no calibration row pools
    tied = estimate.fit(x, y, sources)
    assert [tied.weights[k] for k in estimate.STREAMED] == pytest.approx([0.01] * len(estimate.STREAMED), rel=0.05)
    assert estimate.fit(x, y, sources, streamed=(), floors={}).weights["pool_mb"] == 0.0


def test_no_matmul_is_priced_below_the_chips_peak():
    w = np.full(len(FEATURES), 0.02)
    w[FEATURES.index("dense_gmacs")] = 0.1                          # rows "faster" than the peak
    x, y, sources, _, _ = _synthetic_rows(w)
    floored = estimate.fit(x, y, sources)
    assert floored.weights["dense_gmacs"] == pytest.approx(estimate.COMPUTE_FLOOR["dense_gmacs"])
    assert floored.weights["attention_gmacs"] >= estimate.COMPUTE_FLOOR["attention_gmacs"]
    assert estimate.fit(x, y, sources, floors={}).weights["dense_gmacs"] == pytest.approx(0.1, rel=0.05)


def test_calibration_rows_map_published_names_and_group_protocols():
    rows = published.calibration_rows()
    assert len(rows) > 150 and len({r.model for r in rows}) > 100
    assert {r.source for r in rows} == {"A14 EfficientFormer preprint", "A14 iOS16 ModelBench", "A14 iOS16 Xcode",
                                        "A15 iFormer", "A15 FMViT (iOS 16.6)"}
    assert not any("backbone" in r.published for r in rows)      # 512 px / 1344x800 backbones are not pooled
    l1 = {(r.source, r.ms) for r in rows if r.model == "efficientformer_l1"}
    assert ("A14 EfficientFormer preprint", 1.6) in l1
    # the same iPhone 12, timed on iOS 16 by Xcode's report (RepViT's README), is not the preprint's stack
    assert ("A14 iOS16 Xcode", 2.3) in {(r.source, r.ms) for r in rows if r.model == "repvit_m2_3"}


def test_backbone_rows_are_the_network_without_its_classifier():
    rows = published.calibration_rows(backbones=True)
    backbones = [r for r in rows if r.model.endswith(published.BACKBONE)]
    assert {r.resolution for r in backbones} == {512}             # the 1344x800 ones are left out
    assert ("resnet50[backbone]", "A14 iOS16 ModelBench", 8.7) in {(r.model, r.source, r.ms) for r in backbones}
    assert published.architecture_family("resnet50[backbone]") == "resnet"
    body, _ = published.model_features("resnet18[backbone]", 512)
    whole, _ = published.model_features("resnet18", 512)
    fc_gmacs, fc_mb = 512 * 1000 / 1e9, (512 * 1000 + 1000) * 2 / 1e6      # the classifier: 512 -> 1000
    assert body["dense_gmacs"] == pytest.approx(whole["dense_gmacs"] - fc_gmacs, rel=1e-6)
    assert body["weight_mb"] == pytest.approx(whole["weight_mb"] - fc_mb, rel=1e-6)


def test_the_shipped_cost_model_is_what_fitting_the_published_rows_gives():
    """Refitted on the features it records for every published row (profiling them all again is
    `nas lut estimate --refit`: 134 models, a minute; the next test checks a sample of them)."""
    rows = published.calibration_rows()
    shipped = estimate.CostModel.load()
    recorded = shipped.profiled_features()
    assert set(recorded) == {(r.model, r.resolution) for r in rows}     # every row's model, none failed
    refit = published.fit_published(rows, recorded)
    assert refit.fitted_on == shipped.fitted_on
    for name in ("weights", "scales", "overheads"):
        got, want = getattr(refit, name), getattr(shipped, name)
        assert got.keys() == want.keys()
        assert [got[k] for k in want] == pytest.approx([want[k] for k in want], rel=1e-3, abs=1e-6)
    assert refit.swish_ms_per_mb.keys() == shipped.swish_ms_per_mb.keys()
    assert [refit.swish_ms_per_mb[s] for s in shipped.swish_ms_per_mb] == pytest.approx(
        list(shipped.swish_ms_per_mb.values()), rel=1e-3)
    assert refit.families.keys() == shipped.families.keys() == {published.architecture_family(r.model) for r in rows}
    for fam, by_source in shipped.families.items():
        assert [refit.families[fam][s] for s in by_source] == pytest.approx(list(by_source.values()), rel=1e-3)
    # and its error bars are the same held-out errors, by family and by model
    assert refit.heldout.keys() == shipped.heldout.keys() and refit.heldout["by_source"].keys() == set(shipped.scales)
    for errors in ("by_source", "seen_by_source"):
        for src, rec in shipped.heldout[errors].items():
            assert rec["rows"] == refit.heldout[errors][src]["rows"]
            assert np.array(refit.heldout[errors][src]["ratio_quantiles"]) == pytest.approx(
                np.array(rec["ratio_quantiles"]), rel=1e-3)


@pytest.mark.parametrize("model, family", [
    ("mobilevitv2_050", "mobilevitv2"), ("mobilevit_xs", "mobilevit"), ("tf_efficientnet_b7", "efficientnet"),
    ("efficientnetv2_s", "efficientnet"), ("resnet101", "resnet"), ("resnext50_32x4d", "resnext"),
    ("mobilenetv3_large_075", "mobilenetv3"), ("dm_nfnet_f0", "nfnet"), ("nas_fmvit_s", "fmvit"),
    ("swin_tiny_patch4_window7_224", "swin"), ("efficientformerv2_s0", "efficientformerv2"),
    ("efficientvit_b1", "efficientvit"), ("efficientvit_m4", "efficientvit_msra")])
def test_a_model_belongs_to_its_architecture_family(model, family):
    assert published.architecture_family(model) == family


def test_leaving_a_family_out_fits_on_none_of_its_rows(monkeypatch):
    """Every family's rows are predicted by a fit that saw no row of that family (any source)."""
    shipped = estimate.CostModel.load()
    features = shipped.profiled_features()
    rows = [r for r in published.calibration_rows() if (r.model, r.resolution) in features]
    usable, x, _ = published.design(rows, features)
    seen = []
    real_fit = published.fit

    def recording_fit(x_fit, y_fit, sources, **kw):
        seen.append({tuple(row) for row in x_fit})
        return real_fit(x_fit, y_fit, sources, **kw)

    monkeypatch.setattr(published, "fit", recording_fit)
    pairs = published.leave_family_out(rows, features)
    families = list(dict.fromkeys(published.architecture_family(r.model) for r in usable))
    assert len(seen) == len(families) > 30 and len(pairs) == len(usable)
    for fam, fitted_on in zip(families, seen):
        held = {tuple(xi) for r, xi in zip(usable, x) if published.architecture_family(r.model) == fam}
        others = {tuple(xi) for r, xi in zip(usable, x) if published.architecture_family(r.model) != fam}
        assert not held & fitted_on and others - held <= fitted_on, fam
    # every row is predicted, by a model that differs from the full fit where its family mattered
    full = published.fit(x, np.array([r.ms for r in usable]), [r.source for r in usable])
    by_row = {id(r): p for r, p in pairs}
    assert any(abs(by_row[id(r)] / full.network_ms(dict(zip(FEATURES, xi)), r.source) - 1) > 0.05
               for r, xi in zip(usable, x))


def test_an_estimated_table_prints_its_error_bar_and_a_timed_one_its_calibration(tmp_path):
    """The estimate's 80 % interval is the prediction times the recorded 10 % and 90 % ratios of
    the device's own protocol (family-out errors); a measured table reports its calibration."""
    table = LatencyTable.load(SHIPPED_TABLES / "iphone12@224.yaml")
    cfg = ArchConfig.load(search_spaces.variant_path("efficientformer", "l1"))
    ms = table.predict(cfg)
    recorded = estimate.CostModel.load().heldout["by_source"]["A14 iOS16 ModelBench"]
    q = dict((round(a, 2), b) for a, b in recorded["ratio_quantiles"])
    assert table.interval(ms) == pytest.approx((ms * q[0.1], ms * q[0.9]))
    assert table.error_ratio(0.5) == pytest.approx(q[0.5]) and table.error_ratio(0.925) == pytest.approx(
        (q[0.9] + q[0.95]) / 2)
    assert q[0.1] < 1 < q[0.9]                      # the interval brackets the estimate
    assert table.describe_ms(cfg) == f"{ms:.3f} ms (estimated, 80 % interval {ms * q[0.1]:.2f}–{ms * q[0.9]:.2f} ms)"
    with pytest.raises(UserError, match="outside"):
        table.error_ratio(0.99)
    # a timed table has no estimate to bound: it says how well its networks were calibrated
    timed = LatencyTable("cpu", 224, environment={"calibrations": {"efficientformer": {"median_abs_error_pct": 2.14}}},
                         entries={k: {"ms": 1.0, "source": "measured"} for k in graph.keys(cfg)})
    assert timed.trust(cfg) == "measured, efficientformer networks calibrated to a median |err| of 2.1 %"
    assert timed.interval(10.0) is None


@pytest.mark.slow
def test_todays_profiler_computes_the_features_the_shipped_cost_model_was_fitted_on():
    recorded = estimate.CostModel.load().profiled_features()
    sample = sorted(recorded)[::9]        # 15 of the 134, every architecture kind among them
    for key in sample:
        assert published.model_features(*key)[0] == pytest.approx(recorded[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("device, resolution", [
    ("iphone12", 224), *(pytest.param(d, r, marks=pytest.mark.slow) for d, r in (("iphone12", 256), ("iphone13", 224),
                                                                                 ("iphone13", 256)))])
def test_shipped_tables_cover_every_family_space_and_variant(device, resolution):
    table = LatencyTable.load(SHIPPED_TABLES / f"{device}@{resolution}.yaml", device=device, resolution=resolution)
    model = estimate.CostModel.load()
    assert table.environment["backend"] == "coreml" and table.environment["estimated_by"] == model.version
    assert table.overhead_ms == pytest.approx(model.overheads[estimate.DEVICE_SOURCE[device]], rel=1e-4)
    assert {e["source"] for e in table.entries.values()} == {"estimated"}
    for fam in family_names():   # a new family's ops must be in the shipped tables too
        for name in search_spaces.SPACES:                     # paper-scale and small
            space = SearchSpace.load(search_spaces.space_path(fam, name)).replace(resolution=resolution)
            for n in (10, 1000):
                cfg = random_choice(space, random.Random(n)).to_config(space, n)
                assert not table.missing(cfg), (fam, name, n)
        for variant in search_spaces.variant_names(fam):
            cfg = ArchConfig.load(search_spaces.variant_path(fam, variant)).replace(resolution=resolution)
            assert not table.missing(cfg), (fam, variant)
            assert table.predict(cfg) > table.overhead_ms


def test_estimate_model_prints_any_timm_model(capsys):
    assert main(["lut", "estimate-model", "--device", "iphone13", "--timm", "resnet18", "--resolution", "160"]) == 0
    out = capsys.readouterr().out
    assert "resnet18 @ 160 px on iphone13:" in out and "ms estimated" in out and "dense_gmacs" in out
    assert "80 % interval" in out and "how resnet models ran against their op counts" in out


def test_a_model_is_priced_with_its_familys_factor_where_the_calibration_holds_the_family(capsys):
    """EfficientNet's published times are 2-4x its op counts on the A14: a size of it is priced
    with that factor and the error bar of a seen family; an architecture the calibration lacks is
    priced from its op counts, with the error bar of an unseen one."""
    model = estimate.CostModel.load()
    src = estimate.DEVICE_SOURCE["iphone12"]
    assert model.family_factor("efficientnet", src) > 1.5 and model.family_factor("no_such_family", src) == 1.0
    feats, _ = published.model_features("efficientnet_b4", 320)
    assert model.network_ms(feats, src, "efficientnet") == pytest.approx(
        model.network_ms(feats, src) * model.family_factor("efficientnet", src))
    for timm_name, family, errors in (("efficientnet_b4", "efficientnet", "seen_by_source"),
                                      ("vit_tiny_patch16_224", "vit", "by_source")):
        assert main(["lut", "estimate-model", "--device", "iphone12", "--timm", timm_name]) == 0
        out = capsys.readouterr().out
        ms = float(out.split("ms estimated")[0].split(":")[-1])
        qs = dict((round(a, 2), b) for a, b in model.heldout[errors][src]["ratio_quantiles"])
        assert f"80 % interval {ms * qs[0.1]:.2f}–{ms * qs[0.9]:.2f} ms" in out, out
        assert (f"how {family} models ran" in out) == (family in model.families)


def test_family_factors_are_shrunk_clipped_and_never_seen_by_their_own_held_out_family():
    w = np.full(len(FEATURES), 0.05)                   # weights the shipped fit can recover
    w[[FEATURES.index(k) for k in estimate.STREAMED]] = 0.01
    w[FEATURES.index("dense_gmacs")] = w[FEATURES.index("attention_gmacs")] = 0.3
    x, y, sources, scale, over = _synthetic_rows(w, n_rows=60)
    truth = estimate.CostModel(dict(zip(FEATURES, w)), scale, over)
    # every 5th model is of a family that runs 1.5x its op counts; one model fell off the engine (20x)
    kind = ["slow" if i % 5 == 0 else "offane" if i == 1 else "plain" for i in range(len(y))]
    rows = [published.Row(f"{k}{i}", f"{k}{i}", s, 224, float(ms * {"slow": 1.5, "offane": 20.0}.get(k, 1.0)))
            for i, (k, s, ms) in enumerate(zip(kind, sources, y))]
    features = {(r.model, r.resolution): dict(zip(FEATURES, xi)) for r, xi in zip(rows, x)}

    factors = published.family_factors(truth, rows, features)
    n = {src: sum(k == "slow" and s == src for k, s in zip(kind, sources)) for src in scale}
    mean = sum(n.values()) * np.log(1.5) / (sum(n.values()) + published.PRIOR_ROWS)
    for src in scale:
        assert factors["slow"][src] == pytest.approx(np.exp((n[src] * np.log(1.5) + mean) / (n[src] + 1)))
    off_src = sources[1]
    assert factors["offane"][off_src] == pytest.approx(np.exp((np.log(2) + np.log(2) / 2) / 2))   # clipped at 2x
    assert factors["plain"][off_src] == pytest.approx(1.0, abs=1e-9)

    by_family = {r.model: p for r, p in published.leave_family_out(rows, features)}
    by_model = {r.model: p for r, p in published.leave_one_model_out(rows, features)}
    slow = [r for r in rows if r.model.startswith("slow")]
    # left out by family, a slow model is priced at its op counts (no factor); left out alone, its
    # kin's factor brings it near its time (the kin's rows also pulled the fit a little)
    assert all(by_family[r.model] == pytest.approx(r.ms / 1.5, rel=0.02) for r in slow)
    errors = [abs(by_model[r.model] / r.ms - 1) for r in slow]
    assert max(errors) < 0.2 and np.median(errors) < 0.06


def test_estimate_errors_are_one_line(capsys, tmp_path):
    def fails(*argv, expect):
        assert main(list(argv) + ["--tables", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and expect in err, err

    fails("lut", "estimate-model", "--device", "iphone12", "--timm", "no_such_net", expect="--timm no_such_net")
    fails("lut", "estimate", "--device", "cpu", expect="measured, not estimated")
    (tmp_path / "devices.yaml").write_text("devices:\n  - {name: iphone15, backend: coreml}\n")
    fails("lut", "estimate", "--device", "iphone15", expect="no published protocol to estimate iphone15")
    assert list(tmp_path.iterdir()) == [tmp_path / "devices.yaml"]


def test_estimate_writes_the_users_tables_for_one_family(tmp_path):
    from lut import store

    assert store.estimate_tables("iphone13", ["iformer"], resolutions=[224], space="small", tables_dir=tmp_path,
                                 progress=False, log=lambda line: None) == [tmp_path / "iphone13@224.yaml"]
    table = LatencyTable.load(tmp_path / "iphone13@224.yaml")
    space = SearchSpace.load(search_spaces.space_path("iformer", "small"))
    assert set(table.entries) >= set(build.space_ops(space, 10))
    # the shipped table holds the same estimates
    shipped = LatencyTable.load(SHIPPED_TABLES / "iphone13@224.yaml")
    key = next(iter(table.entries))
    assert table.entries[key]["ms"] == pytest.approx(shipped.entries[key]["ms"], rel=1e-4)


def test_slim_on_an_apple_device_estimates_missing_ops_on_demand(tiny_space_path, tmp_path, capsys):
    """A space no shipped table covers (64 px): nas slim --device iphone12 estimates its ops."""
    from nas import checkpoint
    from nas.session import SupernetSession
    from nas.supernet_training import Recipe, train_supernet

    ckpt = train_supernet(Recipe(space=str(tiny_space_path), img_size=32, epochs=1, batch_size=128),
                          tmp_path / "run", progress=False, log=lambda s: None)
    net = checkpoint.build_supernet(checkpoint.load(ckpt))
    start = net.initial_choice().to_config(net.space, num_classes=net.num_classes)
    model, source = estimate.CostModel.load(), estimate.DEVICE_SOURCE["iphone12"]
    start_ms = model.network_ms(features.profile(reparameterize(get_family(start.family).build(start)),
                                                 (1, 3, 64, 64)), source)
    target = round(model.overheads[source] + 0.6 * (start_ms - model.overheads[source]), 4)
    tables = tmp_path / "tables"
    session = SupernetSession.open(supernet=ckpt, device="iphone12", tables_dir=tables, val_images=100,
                                   calib_images=32, progress=False)
    (config,) = session.slim([target], tmp_path / "slim").configs
    out = capsys.readouterr().out
    assert "estimating" in out and estimate.MODEL_VERSION in out
    cfg = ArchConfig.load(config)
    table = LatencyTable.load(tables / "iphone12@64.yaml")
    assert cfg.meta["predicted_ms"] <= target and cfg.meta["steps"] >= 1
    assert table.predict(cfg) == pytest.approx(cfg.meta["predicted_ms"], rel=1e-3)
    assert {e["source"] for e in table.entries.values()} == {"estimated"}
    assert table.overhead_ms == pytest.approx(model.overheads[source], rel=1e-4)


def test_the_breakdown_says_where_the_estimated_milliseconds_go():
    model, source = estimate.CostModel.load(), "A14 iOS16 ModelBench"
    feats = estimate.CostModel.load().profiled_features()[("efficientformer_l1", 224)]
    parts = model.breakdown(feats, source)
    assert [ms for _, ms in parts] == sorted((ms for _, ms in parts), reverse=True) and all(ms > 0 for _, ms in parts)
    assert sum(ms for _, ms in parts) + model.overheads[source] == pytest.approx(model.network_ms(feats, source))
