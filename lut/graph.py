"""Op graph of an ArchConfig: a ``networkx.DiGraph`` of ops in forward order.

Each node carries its LUT key, its input shape and a factory for a standalone deploy-form
module; ``op_costs`` adds parameters and MACs (``FlopCounterMode``, FLOPs/2). The same graph
prices a config in a latency table, reports params/MACs and names what must be measured.
"""
from __future__ import annotations

import networkx as nx
import torch
from torch.utils.flop_counter import FlopCounterMode

from supernets.config import ArchConfig
from supernets.layers import count_params, reparameterize
from supernets.registry import get_family


def op_graph(config: ArchConfig) -> nx.DiGraph:
    nodes = get_family(config.family).op_nodes(config)
    g = nx.DiGraph(family=config.family, resolution=config.resolution)
    prev = None
    for n in nodes:
        g.add_node(n.name, key=n.key, kind=n.kind, in_shape=n.in_shape, make=n.make)
        if prev is not None:
            g.add_edge(prev, n.name)
        prev = n.name
    return g


def ops(config: ArchConfig) -> list[dict]:
    """Node attribute dicts in forward (topological) order."""
    g = op_graph(config)
    return [dict(name=n, **g.nodes[n]) for n in nx.topological_sort(g)]


def keys(config: ArchConfig) -> list[str]:
    return [op["key"] for op in ops(config)]


def deploy_module(op: dict) -> torch.nn.Module:
    return reparameterize(op["make"]()).eval()


def macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() // 2


def op_costs(config: ArchConfig) -> list[dict]:
    """Per op: name, key, kind, params (train form), params (deploy form), MACs (deploy form)."""
    rows = []
    for op in ops(config):
        train = op["make"]()
        deploy = reparameterize(train).eval()
        rows.append(dict(name=op["name"], key=op["key"], kind=op["kind"], params=count_params(train),
                         deploy_params=count_params(deploy), macs=macs(deploy, torch.zeros(op["in_shape"]))))
    return rows
