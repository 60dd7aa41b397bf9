"""A network's op list (what a latency table prices) covers the network: no op missing, none
counted twice. Checked by MACs and parameters, which need no timing, so a silent gap in a
family's `op_nodes` fails here rather than as a table that under-predicts on some host."""
import random

import pytest
import torch

import search_spaces
from lut import graph
from supernets.config import SearchSpace
from supernets.layers import count_params, reparameterize
from supernets.registry import family_names, get_family, random_choice

CASES = [(family, space) if space == "small" else pytest.param(family, space, marks=pytest.mark.slow)
         for family in family_names() for space in search_spaces.SPACES if search_spaces.space_path(family, space).is_file()]


@pytest.mark.parametrize("family, space_name", CASES)
def test_the_ops_macs_and_parameters_add_up_to_the_networks(family, space_name):
    space = SearchSpace.load(search_spaces.space_path(family, space_name))
    for seed in (0, 1):
        config = random_choice(space, random.Random(seed)).to_config(space, 1000)
        rows = graph.op_costs(config)
        network = reparameterize(get_family(family).build(config)).eval()
        side = config.resolution
        assert sum(r["macs"] for r in rows) == graph.macs(network, torch.zeros(1, 3, side, side)), (seed, config.summary())
        assert sum(r["deploy_params"] for r in rows) == count_params(network), (seed, config.summary())
