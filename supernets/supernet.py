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
import torch.nn.functional as F

from supernets.config import IDENTITY, ArchConfig, BlockSpec, Choice, SearchSpace, StageConfig
from supernets.metapath import MODES, SINGLE_PATH, KnobChoice, MetaPath, Mixer, WidthChoice
from supernets.registry import Family, get_family

_SLOT_PARAM = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.*)$")


class Supernet(nn.Module):
    def __init__(self, space: SearchSpace, num_classes: int | None = None, img_size: int | None = None,
                 train_widths: bool = False):
        """``train_widths``: a ``WidthChoice`` (α over the width options) per stage with more than
        one width, trained by channel masking; without it the supernet trains at maximum width only."""
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
        self.width_choices = nn.ModuleDict(
            {str(j): WidthChoice(tuple(space.widths(j))) for j in range(len(space.stages))
             if train_widths and len(space.widths(j)) > 1})
        self._width_hooks: list | None = None   # installed on the first forward (slimming never needs them)

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
        if len(self.width_choices):
            if self._width_hooks is None:
                self._width_hooks = self._install_width_masks()
            for choice in self.width_choices.values():
                choice.sample()
        return self.net(x)

    # ------------------------------------------------------------------ width masks (FBNetV2)
    def _install_width_masks(self) -> list:
        """A forward hook on every module whose output channels follow a stage's width: it
        multiplies the output by that stage's current mask (see ``WidthChoice``). Which modules,
        and their channel count at every width option, is found generically by building the
        network at each option on the meta device, as ``stage_channel_dims`` does."""
        def shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
            """(output channels, input channels) of every maskable layer (input: convs and Linear)."""
            return {n: (m.weight.shape[0], *((getattr(m, "in_channels", None) or m.in_features,)
                                              if isinstance(m, (nn.Conv2d, nn.Linear)) else ()))
                    for n, m in net.named_modules() if _maskable(m)}

        full = shapes(self.net)
        modules = dict(self.net.named_modules())
        hooks = []
        for key, choice in self.width_choices.items():
            j = int(key)
            at_width = []
            for w in choice.widths:
                with torch.device("meta"):
                    at_width.append(shapes(Supernet(self.space.with_stage(j, max_width=w, min_width=w, options=()),
                                                    self.num_classes, self.img_size).net))
            for name, shape in full.items():
                module = modules[name]
                outs = [s[name][0] for s in at_width]
                if any(n != shape[0] for n in outs):
                    hooks.append(module.register_forward_hook(_WidthMask(choice, outs, shape[0], module)))
                # Inputs too, where the layer reads the stage's channels: an activation between two
                # layers need not map 0 to 0 (iFormer's sigmoid-activated values read 0.5).
                ins = [s[name][1] for s in at_width] if len(shape) > 1 else []
                if any(n != shape[1] for n in ins):
                    hooks.append(module.register_forward_pre_hook(_WidthMask(choice, ins, shape[1], module, inputs=True)))
        return hooks

    def width_probabilities(self) -> list[dict[int, float]]:
        """Per stage, the probability of each width option ({} for a stage without width α)."""
        return [self.width_choices[str(j)].probabilities() if str(j) in self.width_choices else {}
                for j in range(len(self.space.stages))]

    def width_importance(self, stage: int, width: int) -> float | None:
        """How much stage `stage` needs `width` rather than a narrower option: the width α's mass
        at or above `width` over its mass below (the width analogue of the paper's keep/identity
        ratio of a slot). None when the stage has no width α (a supernet trained at full width)."""
        probs = self.width_probabilities()[stage]
        if not probs:
            return None
        below = sum(p for w, p in probs.items() if w < width)
        return sum(p for w, p in probs.items() if w >= width) / max(below, 1e-12)

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
        # Built on the meta device and then given memory: every tensor is overwritten below, so
        # the initialisation a normal build runs (seconds for an L7-sized network) is skipped.
        with torch.device("meta"):
            model = self.family.build(config, img_size=self.img_size)
        model = model.to_empty(device=next(self.net.parameters()).device)
        slot_of = {}
        for j, kinds in enumerate(choice.kinds):
            kept = [(s, k) for s, k in enumerate(kinds) if k != IDENTITY]
            slot_of.update({(j, p): sk for p, sk in enumerate(kept)})
        # non-persistent buffers (EfficientFormer's attention bias index) are not in a state dict
        source = {**dict(self.net.named_buffers()), **self.net.state_dict()}
        target = {**dict(model.named_buffers()), **model.state_dict()}
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
                                         min_width=min(sp.min_width, sp.max_width - step), options=())
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
        if not self.family.channel_reorder:   # the family couples stages' orders
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


def _maskable(module: nn.Module) -> bool:
    """Leaf layers whose weight's first axis is their output channel axis."""
    return isinstance(module, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) \
        and isinstance(getattr(module, "weight", None), torch.Tensor)


class _WidthMask:
    """Forward hook (pre-hook with ``inputs``): channels beyond the sampled width's prefix are
    zeroed (soft: the sample-weighted sum of the options' prefix masks). Channels sit on axis 1 for
    convolutions and norms of maps, on the last axis for Linear and LayerNorm. With a one-hot
    sample (hard, uniform) a LayerNorm or one-group GroupNorm is recomputed over the prefix alone, as
    the sub-network computes it; the soft mixture has no single prefix to normalise over."""

    def __init__(self, choice: WidthChoice, counts: list[int], channels: int, module: nn.Module, inputs: bool = False):
        self.choice, self.counts, self.inputs = choice, torch.tensor(counts), inputs
        self.prefix = (torch.arange(channels)[None, :] < self.counts[:, None]).float()   # (options, channels)
        self.last_axis = isinstance(module, (nn.Linear, nn.LayerNorm))
        self.renorm = not inputs and (isinstance(module, nn.LayerNorm) or
                                      (isinstance(module, nn.GroupNorm) and module.num_groups == 1))

    def __call__(self, module: nn.Module, inputs, output: torch.Tensor | None = None):
        if self.inputs:
            if self.choice.mode in SINGLE_PATH and int(self.counts[int(self.choice.weights.detach().argmax())]) >= \
                    inputs[0].shape[inputs[0].ndim - 1 if self.last_axis else 1]:
                return None   # a full-width sample: nothing to zero
            return (self._masked(module, inputs, inputs[0]), *inputs[1:])
        return self._masked(module, inputs, output)

    def _masked(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        w = self.choice.weights
        if self.prefix.device != output.device:
            self.prefix, self.counts = self.prefix.to(output.device), self.counts.to(output.device)
        axis = output.ndim - 1 if self.last_axis else 1
        shape = [1] * output.ndim
        shape[axis] = output.shape[axis]
        if self.renorm and self.choice.mode in SINGLE_PATH:
            i = int(w.detach().argmax())
            n = int(self.counts[i])
            if n < output.shape[axis]:
                x = inputs[0].narrow(axis, 0, n)
                if isinstance(module, nn.LayerNorm):
                    y = F.layer_norm(x, (n,), module.weight[:n], module.bias[:n], module.eps)
                else:
                    y = F.group_norm(x, 1, module.weight[:n], module.bias[:n], module.eps)
                pad = list(output.shape)
                pad[axis] = output.shape[axis] - n
                output = torch.cat([y, y.new_zeros(pad)], dim=axis)
        mask = (w.to(output.dtype) @ self.prefix.to(output.dtype)).view(shape)
        if self.inputs:
            # Forward: the masked input. Backward: the identity, and nothing to α. The output
            # masks carry α's gradient, which needs the channels beyond the sampled prefix to
            # pass their gradient back (with a one-hot sample, a masked backward would give every
            # width the same gradient, hence α none).
            return output + (output * (mask.detach() - 1)).detach()
        return output * mask
