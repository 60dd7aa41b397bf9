"""The generic supernet: a family's network with a MetaPath in every slot, at maximum width.

Weights live at the maximum width of every stage. A sub-architecture (a ``Choice``: width and
kind per slot) is materialised by ``subnet(choice)``: the family builds the concrete model of
that config and every tensor is copied from the supernet as its leading slice (a prefix of
channels). The evaluated module is therefore the very module a user would train and deploy,
and no layer needs width-aware code. ``reorder_channels()`` first permutes every stage's
residual channels by importance (function-preserving), so the prefix keeps the most important
channels.
"""
from __future__ import annotations

import re
from typing import Iterator

import torch
import torch.nn as nn

from supernets.config import IDENTITY, ArchConfig, BlockSpec, Choice, SearchSpace, StageConfig
from supernets.metapath import MODES, KnobChoice, MetaPath, Mixer
from supernets.registry import Family, get_family

_SLOT_PARAM = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.*)$")


class Supernet(nn.Module):
    def __init__(self, space: SearchSpace, num_classes: int | None = None, img_size: int | None = None):
        super().__init__()
        self.space = space
        self.family: Family = get_family(space.family)
        self.num_classes = num_classes or space.num_classes
        self.img_size = img_size or space.resolution
        stages = tuple(
            StageConfig(s.max_width, tuple(BlockSpec("metapath", {"stage": j, "choices": s.choices})
                                           for _ in range(s.slots)), self._skeleton_knobs(j))
            for j, s in enumerate(space.stages)
        )
        widths = [s.max_width for s in space.stages]
        skeleton = ArchConfig(space.family, space.resolution, self.num_classes,
                              self.family.stem_width(widths), stages, dict(space.head),
                              width_step=space.width_step, knobs=dict(space.knobs))
        self.net = self.family.build(skeleton, img_size=self.img_size, make_block=self._make_metapath)

    def _skeleton_knobs(self, j: int) -> dict:
        knobs = self.space.supernet_knobs(j)
        for name in self.family.alpha_knobs:
            values = self.space.stages[j].knobs.get(name, ())
            if len(values) > 1:
                knobs[name] = tuple(values)
        return knobs

    def _make_metapath(self, spec: BlockSpec, dim: int, grid: tuple[int, int]) -> MetaPath:
        choices = self.space.stages[spec.knobs["stage"]].choices
        # knobs the family added to the slot's spec (layer scale, attention heads...) reach every candidate
        knobs = {k: v for k, v in spec.knobs.items() if k not in ("stage", "choices")}
        candidates = {k: self.family.make_block(BlockSpec(k, knobs), dim, grid) for k in choices if k != IDENTITY}
        return MetaPath(candidates, choices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ------------------------------------------------------------------ architecture state
    def metapaths(self) -> list[list[MetaPath]]:
        return [list(stage.blocks) for stage in self.net.stages]

    def knob_choices(self) -> list[dict[str, KnobChoice]]:
        """Per stage, the α-searched knobs (``Family.alpha_knobs``) by name."""
        out: list[dict[str, KnobChoice]] = [{} for _ in self.space.stages]
        for name, m in self.net.named_modules():
            if isinstance(m, KnobChoice):
                out[int(name.split(".")[1])][m.name] = m
        return out

    def set_mixing(self, mode: str, tau: float) -> None:
        if mode not in MODES:
            raise ValueError(f"mixing mode must be one of {MODES}, got {mode!r}")
        for m in self.modules():
            if isinstance(m, Mixer):
                m.mode, m.tau = mode, float(tau)

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        return (p for n, p in self.named_parameters() if n.endswith(".alpha"))

    def weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if not n.endswith(".alpha"))

    def probabilities(self) -> list[list[dict[str, float]]]:
        return [[mp.probabilities() for mp in stage] for stage in self.metapaths()]

    def knob_probabilities(self) -> list[dict[str, dict]]:
        """Per stage, for each α-searched knob, the probability of each value."""
        return [{k: m.probabilities() for k, m in stage.items()} for stage in self.knob_choices()]

    def slot_importance(self) -> list[list[float]]:
        """Paper §4.2: α4D/αI in stages 1-2 and (α3D+α4D)/αI in 3-4, i.e. the probability mass of
        the non-identity paths over the identity's. A slot without identity is indispensable (inf)."""
        out = []
        for stage in self.probabilities():
            row = []
            for probs in stage:
                keep = sum(p for k, p in probs.items() if k != IDENTITY)
                row.append(keep / probs[IDENTITY] if IDENTITY in probs else float("inf"))
            out.append(row)
        return out

    def initial_choice(self) -> Choice:
        """The slimming start: every stage at max width, every slot kept with its most probable
        non-identity kind. Token kinds (e.g. mb3d) must form a stage's tail, so the tail is the
        longest suffix of slots whose α prefers a token kind; the slots before it take their best
        map kind."""
        token_kinds = set(self.family.token_kinds)
        kinds = []
        for sp, stage in zip(self.space.stages, self.probabilities()):
            best = [max((k for k in p if k != IDENTITY), key=p.get) for p in stage]
            tail = len(best)
            while tail > 0 and best[tail - 1] in token_kinds:
                tail -= 1
            row = []
            for i, p in enumerate(stage):
                pool = [k for k in p if k != IDENTITY and ((k in token_kinds) == (i >= tail))]
                row.append(max(pool, key=p.get) if pool else best[i])
            kinds.append(tuple(row))
        return Choice(tuple(s.max_width for s in self.space.stages), tuple(kinds))

    # ------------------------------------------------------------------ weight inheritance
    def subnet(self, choice: Choice | ArchConfig) -> nn.Module:
        """The concrete model of `choice` with weights inherited from the supernet (prefix slices)."""
        if isinstance(choice, ArchConfig):
            choice = Choice.from_config(choice, self.space)
        config = choice.to_config(self.space, num_classes=self.num_classes)
        model = self.family.build(config, img_size=self.img_size)
        slot_of = {}
        for j, kinds in enumerate(choice.kinds):
            kept = [(s, k) for s, k in enumerate(kinds) if k != IDENTITY]
            slot_of.update({(j, p): sk for p, sk in enumerate(kept)})
        source = self.net.state_dict()
        target = model.state_dict()
        for name, tensor in target.items():
            m = _SLOT_PARAM.match(name)
            if m:
                slot, kind = slot_of[int(m[1]), int(m[2])]
                src_name = f"stages.{m[1]}.blocks.{slot}.paths.{kind}.{m[3]}"
            else:
                src_name = name
            src = source[src_name]
            if src.ndim != tensor.ndim or any(a > b for a, b in zip(tensor.shape, src.shape)):
                raise RuntimeError(f"cannot inherit {name} {tuple(tensor.shape)} from {src_name} {tuple(src.shape)}")
            tensor.copy_(src[tuple(slice(0, n) for n in tensor.shape)])
        return model

    # ------------------------------------------------------------------ channel order
    def stage_channel_dims(self, stage: int) -> list[tuple[str, int]]:
        """(state-dict name, dim) of every tensor axis that carries stage `stage`'s residual channels.

        Found generically by building the supernet twice on the meta device (no memory, no
        init cost): once as is and once with that stage one width step narrower; an axis is a
        residual-channel axis where its size follows the stage width one-for-one.
        """
        sp, step = self.space.stages[stage], self.space.width_step
        if sp.max_width - step < step:
            return []
        narrower = self.space.with_stage(stage, max_width=sp.max_width - step,
                                         min_width=min(sp.min_width, sp.max_width - step))
        with torch.device("meta"):
            wide = Supernet(self.space, self.num_classes, self.img_size).net.state_dict()
            narrow = Supernet(narrower, self.num_classes, self.img_size).net.state_dict()
        dims = []
        for name, t in wide.items():
            for d, (a, b) in enumerate(zip(t.shape, narrow[name].shape)):
                if a == sp.max_width and b == sp.max_width - step:
                    dims.append((name, d))
        return dims

    @torch.no_grad()
    def reorder_channels(self) -> list[torch.Tensor]:
        """Permute each stage's residual channels by decreasing L1 importance (the normalised
        sum of |w| over every tensor that reads or writes the channel), so prefix slicing keeps
        the most important ones. The network function is unchanged. Returns the permutations."""
        if not self.family.extra.get("channel_reorder", True):   # the family couples stages' orders
            return [torch.arange(s.max_width) for s in self.space.stages]
        state = self.net.state_dict()
        param_names = {n for n, _ in self.net.named_parameters()}
        perms = []
        for j in range(len(self.space.stages)):
            dims = self.stage_channel_dims(j)
            if not dims:
                perms.append(torch.arange(self.space.stages[j].max_width))
                continue
            score = torch.zeros(self.space.stages[j].max_width, dtype=torch.float64)
            for name, d in dims:
                if name not in param_names:
                    continue
                w = state[name].detach().abs().double().movedim(d, 0).reshape(state[name].shape[d], -1).sum(1)
                score += w / w.sum().clamp_min(1e-12)
            perm = torch.argsort(score, descending=True, stable=True)
            for name, d in dims:
                t = state[name]
                t.copy_(t.index_select(d, perm))
            perms.append(perm)
        return perms
