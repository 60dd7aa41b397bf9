"""Property: a mutated config or space YAML loads and builds, or is one short ConfigError line.

A small, derandomized budget here (CI); `experiments/config_fuzz/run.py` runs ≥ 10,000."""
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.input_fuzz import mutate, outcome, seeds, source

SEEDS = seeds()


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), which=st.integers(0, len(SEEDS) - 1))
def test_a_mutated_file_loads_or_is_one_short_error_line(rng, which):
    kind, name, doc = SEEDS[which]
    text = mutate(rng, doc, source(kind, doc))
    result, detail = outcome(kind, text)
    assert result != "crash", f"{name} mutated:\n{text[:2000]}\n-> {detail}"


@pytest.mark.parametrize("kind, name, doc", SEEDS, ids=[s[1] for s in SEEDS])
def test_every_seed_builds_unmutated(kind, name, doc):
    assert outcome(kind, source(kind, doc)) == ("built", "")
