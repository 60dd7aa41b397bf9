"""Where the milliseconds go (lut.breakdown, `nas show --breakdown`): the parts add up to the
table's prediction, attention is where the attention blocks are, and the command's errors."""
import pytest

import search_spaces
from lut import breakdown, graph, store
from lut.estimate import CostModel
from nas.cli import main
from supernets.config import ArchConfig
from tests.nas.conftest import attention_config


@pytest.fixture(scope="module")
def weights():
    return CostModel.load().weights


@pytest.mark.parametrize("family", ["efficientformer", "fastvit", "mobilevitv3", "iformer", "fmvit"])
def test_stages_and_kinds_each_add_up_to_the_prediction(family, weights, tmp_path):
    cfg = ArchConfig.load(search_spaces.variant_path(family, {"efficientformer": "l1", "fastvit": "sa12",
                                                              "mobilevitv3": "xs", "iformer": "t", "fmvit": "t"}[family]))
    table, predict = store.open_predictor("iphone12", cfg.resolution, tmp_path, progress=False)
    b = breakdown.breakdown(table, cfg, weights)
    assert b.total_ms == pytest.approx(predict(cfg))
    assert sum(b.by_stage.values()) == pytest.approx(b.total_ms) == pytest.approx(sum(b.by_kind.values()))
    assert b.by_stage["call overhead"] == b.by_kind["call overhead"] == table.overhead_ms > 0
    whole = sum(table.ms(op.key) for op in graph.ops(cfg) if op.kind in {"stem", "embed", "downsample", "head"})
    assert b.by_kind[breakdown.STEM_DOWNSAMPLE_HEAD] == pytest.approx(whole)
    assert b.by_kind["attention"] > 0   # every published variant of these families attends somewhere


def test_attention_is_where_the_attention_blocks_are(weights, tmp_path):
    with_attention = attention_config("efficientformer", resolution=64)
    table, predict = store.open_predictor("iphone12", 64, tmp_path, progress=False)
    predict(with_attention)
    b = breakdown.breakdown(table, with_attention, weights)
    last = f"stage {len(with_attention.stages)}"
    assert b.by_kind["attention"] > 0 and b.by_kind["attention"] < b.by_stage[last]
    shares = breakdown.op_shares(next(op for op in graph.ops(with_attention) if op.kind == "mb3d"), weights)
    assert set(shares) >= {"attention", "MLP / FFN"} and sum(shares.values()) == pytest.approx(1.0)
    conv_block = next(op for op in graph.ops(with_attention) if op.kind == "mb4d")
    assert "attention" not in breakdown.op_shares(conv_block, weights)


def test_show_breakdown_prints_and_draws_two_configs_side_by_side(tmp_path, capsys):
    """MobileViTv3-XS next to FastViT-SA12, on the estimated iphone12 table: the one built on
    SiLU also gets a line on what its SiLU may cost in the table's iOS stack."""
    xs = search_spaces.variant_path("mobilevitv3", "xs")
    sa12 = search_spaces.variant_path("fastvit", "sa12")
    png = tmp_path / "xs-vs-sa12.png"
    assert main(["show", str(xs), "--device", "iphone12", "--breakdown", "--compare", str(sa12), "--png", str(png),
                 "--tables", str(tmp_path / "tables"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "per stage" in out and "per kind of op" in out and "attention" in out and "sa12" in out.splitlines()[0]
    assert png.read_bytes()[:4] == b"\x89PNG"
    notes = [line for line in out.splitlines() if "SiLU/HardSwish" in line]
    assert len(notes) == 1 and notes[0].lstrip().startswith("xs: SiLU/HardSwish:")
    mb = float(notes[0].split("SiLU/HardSwish: ")[1].split(" MB")[0])
    assert mb == pytest.approx(breakdown.swish_mb(ArchConfig.load(xs)), abs=0.05) and mb > 0


@pytest.mark.parametrize("argv, says", [
    (["--breakdown"], "say which device's table to split"),
    (["--breakdown", "--device", "iphone12", "--compare", "MISSING.yaml"], "MISSING.yaml"),
])
def test_show_breakdown_errors_are_one_line(argv, says, tmp_path, capsys):
    l1 = search_spaces.variant_path("efficientformer", "l1")
    assert main(["show", str(l1), *argv, "--tables", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert not list(tmp_path.glob("*.png"))
