"""nas search: Optuna NSGA-II over a supernet's space, journal storage, resume, concurrent workers."""
import csv
from pathlib import Path

import optuna
import pytest

from nas import search
from nas.cli import main
from supernets.config import ArchConfig, SearchSpace
from supernets.registry import get_family
from tests.nas.conftest import SEARCH_FLAGS, assert_one_shared_budget, concurrent_searches
from tests.conftest import TINY_FASTVIT_SPACE, TINY_FMVIT_SPACE, TINY_IFORMER_SPACE, TINY_MOBILEVIT_SPACE, TINY_SPACE

COMMON = SEARCH_FLAGS


@pytest.mark.parametrize("space_text", [TINY_SPACE, TINY_FASTVIT_SPACE, TINY_MOBILEVIT_SPACE, TINY_IFORMER_SPACE,
                                        TINY_FMVIT_SPACE])
def test_every_trial_encodes_a_valid_config(space_text, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(space_text)
    space = SearchSpace.load(path)
    token_kinds = set(get_family(space.family).token_kinds)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    depths = set()
    for _ in range(40):
        trial = study.ask()
        choice = search.suggest(trial, space)
        cfg = choice.to_config(space, 10)        # raises ConfigError if the family refuses it
        for j, stage in enumerate(cfg.stages):
            kinds = [b.kind for b in stage.blocks]
            assert len(kinds) == trial.params[f"s{j}.depth"] >= space.stages[j].min_blocks
            is_token = [k in token_kinds for k in kinds]
            assert is_token == sorted(is_token)   # map blocks first, then token blocks
            depths.add(len(kinds))
        study.tell(trial, [0.0, 1.0])
    assert len(depths) > 1


def _trials(csv_path):
    return list(csv.DictReader(open(csv_path)))


def test_search_writes_a_feasible_front_and_resumes(tiny_run, tmp_path, capsys):
    out = tmp_path / "search"
    argv = ["search", "--target-ms", "0.5", "--supernet", str(tiny_run), "--tables", str(tmp_path / "tables"),
            "--out", str(out), *COMMON]
    assert main(argv + ["--trials", "10"]) == 0
    rows = _trials(out / "trials.csv")
    assert len(rows) == 10 and (out / search.JOURNAL).is_file()
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # resume: the study holds 10 finished trials, so 16 runs only 6 more
    assert main(argv + ["--trials", "16"]) == 0
    assert "16 trials" in capsys.readouterr().out
    rows = _trials(out / "trials.csv")
    assert sorted(int(r["trial"]) for r in rows) == list(range(16))
    feasible = [(float(r["accuracy"]), float(r["latency_ms"])) for r in rows if r["feasible"] == "True"]
    front = [r for r in rows if r["pareto"] == "True"]
    configs = sorted((out / "pareto").glob("*.yaml"))
    assert len(configs) == len(front) >= 1
    for p in configs:
        cfg = ArchConfig.load(p)
        acc, ms = cfg.meta["inherited_top1"], cfg.meta["predicted_ms"]
        assert ms <= 0.5
        # nothing feasible is at least as accurate and strictly faster, or strictly more accurate and as fast
        assert not any((a >= acc and m < ms - 1e-9) or (a > acc + 1e-9 and m <= ms) for a, m in feasible)


def test_several_targets_one_front_and_the_best_member_of_each(tiny_run, tmp_path, capsys):
    out = tmp_path / "ladder"
    argv = ["search", "--target-ms", "0.5", "0.47", "0.3", "--supernet", str(tiny_run), "--tables",
            str(tmp_path / "tables"), "--out", str(out), "--trials", "12", *COMMON]
    assert main(argv) == 0
    front = [r for r in _trials(out / "trials.csv") if r["pareto"] == "True"]
    assert front and all(float(r["latency_ms"]) <= 0.5 for r in front)     # one front, under the largest target
    best = {r["target_ms"]: r for r in csv.DictReader(open(out / "best_per_target.csv"))}
    assert list(best) == ["0.5", "0.47", "0.3"]
    for t, row in best.items():
        fitting = [r for r in front if float(r["latency_ms"]) <= float(t)]
        if not fitting:
            assert row["trial"] == "", row
            continue
        top = max(fitting, key=lambda r: float(r["accuracy"]))
        assert float(row["inherited_top1"]) == pytest.approx(float(top["accuracy"]), abs=1e-3)
        assert float(row["predicted_ms"]) <= float(t) and Path(row["config"]).is_file()
    assert best["0.3"]["trial"] == ""           # below the space's floor: said, not dropped
    assert "0.3 ms: no member of the front is this fast" in capsys.readouterr().out


@pytest.mark.slow
def test_two_concurrent_searches_share_one_journal_study(tiny_run, tmp_path):
    out = tmp_path / "search"
    argv = ["search", "--target-ms", "0.5", "--supernet", str(tiny_run), "--tables", str(tmp_path / "tables"), *COMMON]
    # fill the table first (another study), so the two workers never write it at the same time
    assert main(argv + ["--out", str(tmp_path / "warm-up"), "--trials", "8"]) == 0
    concurrent_searches(argv + ["--out", str(out), "--trials", "12"])
    storage = search.open_storage(None, out)
    assert_one_shared_budget(optuna.load_study(study_name="efficientformer@iphone12-0.5ms", storage=storage).trials, 12)


def test_search_errors_are_one_line(tiny_run, tmp_path, capsys):
    def fails(*extra, expect):
        assert main(["search", "--supernet", str(tiny_run), "--tables", str(tmp_path / "tables"),
                     "--out", str(tmp_path / "s"), *COMMON, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and expect in err, err

    fails("--target-ms", "0.5", "--trials", "0", expect="--trials 0")
    fails("--target-ms", "0", "--trials", "2", expect="must be a finite number > 0")
    fails("--target-ms", "0.5", "--trials", "2", "--storage", "nosuchdb://x", expect="--storage nosuchdb://x")
    assert not (tmp_path / "s").exists()
    assert main(["search", "--supernet", str(tiny_run), "--tables", str(tmp_path / "tables"), "--out",
                 str(tmp_path / "s"), "--target-ms", "0.5", "--trials", "2", "--study", "mine", *COMMON]) == 0
    capsys.readouterr()
    fails("--target-ms", "0.4", "--trials", "3", "--study", "mine", expect="searched under 0.5 ms")
