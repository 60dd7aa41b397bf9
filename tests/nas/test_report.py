import re

import pytest

from nas import checkpoint
from nas.cli import main
from nas.report import branches_kept


def test_a_branch_is_kept_when_the_split_uses_at_least_that_many():
    # P(n) = 0.1, 0.2, 0.3, 0.4 for n = 0..3: f1 is kept unless n = 0, f3 only when n = 3
    assert branches_kept({0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}) == pytest.approx([0.9, 0.7, 0.4])
    assert branches_kept({1: 0.5, 3: 0.5}) == pytest.approx([1.0, 0.5, 0.5])


def test_show_supernet_prints_width_slot_and_frequency_split_alpha(tiny_fmvit_run, capsys):
    net = checkpoint.build_supernet(checkpoint.load(tiny_fmvit_run))
    assert main(["show", str(tiny_fmvit_run.parent)]) == 0     # the run directory
    out = capsys.readouterr().out
    splits = re.findall(r"hf_branches  (.*)", out)
    kept = re.findall(r"branch kept  (.*)", out)
    assert len(splits) == len(kept) == 3
    for j, (line, kept_line) in enumerate(zip(splits, kept), start=1):
        shown = {int(v): float(p) for v, p in re.findall(r"(\d+): ([\d.]+)", line)}
        want = net.knob_probabilities()[j]["hf_branches"]
        assert shown == pytest.approx(want, abs=1e-3)
        keep = [float(p) for p in re.findall(r"f\d: ([\d.]+)", kept_line)]
        assert keep == pytest.approx(branches_kept(want), abs=1e-3)
    assert out.count("importance") == sum(s.slots for s in net.space.stages)
    trained = [p for p in net.width_probabilities() if p]          # width α (trained by default)
    shown_widths = re.findall(r"\n    width  (.*)", out)
    assert trained and len(shown_widths) == len(trained)
    for line, want in zip(shown_widths, trained):
        assert {int(w): float(p) for w, p in re.findall(r"(\d+): ([\d.]+)", line)} == pytest.approx(want, abs=1e-3)


def test_show_gives_the_latency_range_slimming_can_reach(tiny_run, tmp_path, capsys):
    from nas.cli import main

    tables = ["--tables", str(tmp_path / "tables"), "--no-progress"]
    assert main(["show", str(tiny_run.parent), "--device", "iphone12", *tables]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "reachable on iphone12@64" in x)
    floor, start = (float(part.split(" ms")[0].split()[-1]) for part in line.split(" to "))
    assert 0 < floor < start
    assert main(["slim", "--target-ms", "0.001", "--device", "iphone12", "--supernet", str(tiny_run), *tables]) == 2
    assert f"smallest reachable latency {floor:.3f} ms" in capsys.readouterr().err
    assert main(["slim", "--target-ms", f"{start + 0.001:.3f}", "--device", "iphone12", "--supernet", str(tiny_run),
                 "--out", str(tmp_path / "o"), *tables]) == 0
    assert "note:" in capsys.readouterr().out   # the start meets it: no step, and it says so
