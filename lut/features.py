"""The features an op or network is priced by, read off its aten ops in one forward pass on the
``meta`` device (shapes only, no compute): MACs of weight convs/linears and of activation x
activation matmuls, bytes moved by depthwise convs, elementwise ops, transcendental activations,
LayerNorm/GroupNorm, softmax, layout changes and pooling, weight bytes, and the number of compute
ops; and, unpriced, the Swish activations' share (`DETAILS`). They are additive, so a network's
features are the sum of its LUT ops'. BatchNorm is free:
Core ML folds it into the conv before it. `lut.estimate` fits and applies the cost model over them.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

BYTES_PER_ELEMENT = 2   # the Neural Engine computes in float16

FEATURES = ("dense_gmacs", "attention_gmacs", "depthwise_mb", "elementwise_mb", "activation_mb", "norm_mb",
            "softmax_mb", "layout_mb", "pool_mb", "weight_mb", "ops")
# Read off with the features but not priced by the cost model: the MB of SiLU and HardSwish (the
# Swish family), already in activation_mb. What they cost depends on the iOS stack (7-10x other
# activations per MB in the iOS 16 stacks' published rows, 2x in iFormer's:
# experiments/apple_estimate/activation_trial.md), so an estimate says how much of it a network has.
DETAILS = ("swish_mb",)
_SWISH = {"silu", "silu_", "hardswish", "hardswish_"}

_VIEWS = {"view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "unsqueeze", "squeeze",
          "slice", "select", "split", "split_with_sizes", "unbind", "alias", "detach", "as_strided", "flatten",
          "chunk", "narrow", "unflatten", "lift_fresh", "_to_copy", "clone", "contiguous", "copy_"}
_LAYOUT = {"permute", "transpose", "t", "cat", "stack", "roll", "constant_pad_nd", "im2col", "col2im",
           "pixel_shuffle", "pixel_unshuffle", "clone", "contiguous", "repeat", "index_select", "gather"}
_ELEMENTWISE = {"add", "sub", "mul", "div", "relu", "relu_", "clamp", "clamp_min", "clamp_max", "hardtanh",
                "neg", "pow", "sqrt", "rsqrt", "where", "maximum", "minimum", "abs", "add_", "mul_", "reciprocal",
                "leaky_relu", "threshold", "fill_", "zero_", "copy", "masked_fill", "_native_batch_norm_legit"}
_ACTIVATION = {"gelu", "silu", "sigmoid", "hardswish", "hardsigmoid", "tanh", "mish", "erf", "exp", "log",
               "elu", "softplus", "gelu_", "silu_", "hardswish_", "sigmoid_", "hardsigmoid_"}
_NORM = {"native_layer_norm", "layer_norm", "native_group_norm", "group_norm"}
_SOFTMAX = {"_softmax", "softmax", "_log_softmax", "log_softmax"}
_POOL = {"avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool2d", "_adaptive_avg_pool2d",
         "mean", "sum", "amax", "adaptive_max_pool2d", "avg_pool1d", "max_pool1d"}
_MATMUL = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear"}



def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _mb(tensors: Iterable[torch.Tensor]) -> float:
    return sum(t.numel() for t in tensors) * BYTES_PER_ELEMENT / 1e6


class _Profiler(TorchDispatchMode):
    """Adds each aten op's features to ``self.features`` (and, given `part_of`, to the features of
    the part of the module the op runs in, ``self.parts``). Tensors derived from parameters by
    views (``linear``'s transposed weight) stay parameters, so a matmul with a weight counts as a
    dense layer and one between two activations as attention."""

    def __init__(self, params: Iterable[torch.Tensor], part_of: Callable[[str], str] | None = None):
        super().__init__()
        self.features = dict.fromkeys(FEATURES + DETAILS, 0.0)
        self.parts: dict[str, dict[str, float]] = {}
        self._part_of = part_of
        self._weights = {id(p) for p in params}
        self._keep: list[torch.Tensor] = []   # keeps ids of derived weights from being reused

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        ins = _tensors((args, kwargs))
        outs = _tensors(out)
        from_weight = any(id(t) in self._weights for t in ins)
        if from_weight and name in _VIEWS:
            for t in outs:
                self._weights.add(id(t))
                self._keep.append(t)
            return out
        feature, amount = self._feature(func, name, args, kwargs, out, [t for t in ins if id(t) not in self._weights],
                                        outs, from_weight)
        if feature is not None:   # else a view or bookkeeping: free
            targets = [self.features]
            if self._part_of is not None:
                targets.append(self.parts.setdefault(self._part_of(feature), dict.fromkeys(FEATURES, 0.0)))
            for f in targets:
                f[feature] += amount
                f["ops"] += 1
            if name in _SWISH:
                self.features["swish_mb"] += amount
        return out

    @staticmethod
    def _feature(func, name, args, kwargs, out, acts, outs, from_weight) -> tuple[str | None, float]:
        """The feature one aten op adds to, and how much."""
        if name == "convolution":
            x, w, groups = args[0], args[1], args[8]
            if groups > 1 and groups == x.shape[1] and w.shape[1] == 1:
                return "depthwise_mb", _mb([x, *outs])
            return "dense_gmacs", flop_registry[func.overloadpacket](*args, **kwargs, out_val=out) / 2e9
        if name in _MATMUL:
            macs = flop_registry[func.overloadpacket](*args, **kwargs, out_val=out) / 2e9 \
                if func.overloadpacket in flop_registry else 0.0
            return ("dense_gmacs" if from_weight else "attention_gmacs"), macs
        for names, feature, tensors in ((_SOFTMAX, "softmax_mb", acts + outs), (_NORM, "norm_mb", acts[:1] + outs[:1]),
                                        (_ACTIVATION, "activation_mb", acts + outs), (_POOL, "pool_mb", acts + outs),
                                        (_LAYOUT, "layout_mb", outs), (_ELEMENTWISE, "elementwise_mb", acts + outs)):
            if name in names:
                return feature, _mb(tensors)
        return None, 0.0


def profile(module: torch.nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """Features of one forward pass of a deploy-form module at `input_shape` (batch 1).

    Runs on the ``meta`` device (shapes only) when every op supports it, else on the CPU."""
    return _run(module, input_shape).features


def profile_parts(module: torch.nn.Module, input_shape: tuple[int, ...],
                  part: Callable[[list[torch.nn.Module], str], str]) -> dict[str, dict[str, float]]:
    """`profile`, split by part: each aten op's features go to ``part(modules, feature)``, with
    `modules` the submodules the op runs in (outermost first) and `feature` the one it adds to.
    The parts' features add up to the module's, but for the weight bytes (a whole-module feature)."""
    from torch.utils.module_tracker import ModuleTracker

    by_name = {type(module).__name__ + (f".{n}" if n else ""): m for n, m in module.named_modules()}
    with ModuleTracker() as tracker:
        def part_of(feature: str) -> str:
            names = sorted((n for n in tracker.parents if n in by_name), key=lambda n: n.count("."))
            return part([by_name[n] for n in names], feature)

        return _run(module, input_shape, part_of).parts


def _run(module: torch.nn.Module, input_shape: tuple[int, ...],
         part_of: Callable[[str], str] | None = None) -> _Profiler:
    module = module.eval()
    weight_mb = sum(p.numel() for p in module.parameters()) * BYTES_PER_ELEMENT / 1e6
    for device in ("meta", "cpu"):
        try:
            m = module.to(device)
            with torch.no_grad(), _Profiler(list(m.parameters()) + list(m.buffers()), part_of) as prof:
                m(torch.zeros(input_shape, device=device))
            break
        except (NotImplementedError, RuntimeError):
            if device == "cpu":
                raise
            module = module.to_empty(device="cpu")   # the values were lost on meta; features need shapes only
    prof.features["weight_mb"] = weight_mb
    return prof
