"""The ops of an ArchConfig, in forward order: the family's typed ``OpNode`` list.

Each ``OpNode`` carries its name, its LUT key, its kind, its input shape and a factory for a
standalone deploy-form module; ``op_costs`` adds parameters and MACs (``FlopCounterMode``,
FLOPs/2). The same list prices a config in a latency table, reports params/MACs and names what
must be measured.

An op is a block or larger (a stem, an embedding, a stage's FMB, the head), timed whole at batch
1: the branches inside a block (FastViT's reparameterizable branches, FMViT's high bands and
fusion) are inside one op's timing, and ops run one after another. So the ops form a chain, and a
table prices a config as the sum over the list. ``op_graph`` gives the same chain as a
``networkx.DiGraph`` for inspection and drawing (``networkx.draw``, ``write_graphml``); pricing
never needs more than the list.
"""
from __future__ import annotations

import networkx as nx
import torch
from torch.utils.flop_counter import FlopCounterMode

from supernets.config import ArchConfig
from supernets.layers import count_params, reparameterize
from supernets.registry import OpNode, get_family


def ops(config: ArchConfig) -> list[OpNode]:
    """The config's ops in forward order (the family's ``op_nodes``)."""
    return get_family(config.family).op_nodes(config)


def op_graph(config: ArchConfig) -> nx.DiGraph:
    """The ops as a networkx chain (node: the op's name; attributes: the OpNode's fields)."""
    g = nx.DiGraph(family=config.family, resolution=config.resolution)
    chain = ops(config)
    nx.add_path(g, [op.name for op in chain])
    for op in chain:
        g.nodes[op.name].update(key=op.key, kind=op.kind, in_shape=op.in_shape, make=op.make)
    return g


def keys(config: ArchConfig) -> list[str]:
    return [op.key for op in ops(config)]


def key_kind(key: str) -> str:
    """The implementation an op key names (``fv-embed`` of ``fv-embed:64>128:56x56``): finer than
    ``OpNode.kind``, which families share."""
    return key.split(":", 1)[0]


def deploy_module(op: OpNode) -> torch.nn.Module:
    return reparameterize(op.make()).eval()


def macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() // 2


def op_costs(config: ArchConfig) -> list[dict]:
    """Per op: name, key, kind, params (train form), params (deploy form), MACs (deploy form)."""
    rows = []
    for op in ops(config):
        train = op.make()
        deploy = reparameterize(train).eval()
        rows.append(dict(name=op.name, key=op.key, kind=op.kind, params=count_params(train),
                         deploy_params=count_params(deploy), macs=macs(deploy, torch.zeros(op.in_shape))))
    return rows
