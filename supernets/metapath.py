"""MetaPath: one supernet slot holding candidate blocks and their architecture logits α.

Mixing follows the EfficientFormer paper's eq. 8 with standard Gumbel noise
(``torch.nn.functional.gumbel_softmax``; the paper writes ε ~ U(0, 1), which is the uniform
draw a Gumbel sample is made from):

* ``soft`` – weighted sum of every candidate (the paper's form);
* ``hard`` – straight-through: one sampled candidate runs forward, the gradient reaches α
  through its soft weight. Only the sampled block is computed, so a step costs about one path.

In eval mode the mixing is deterministic: soft uses softmax(α/τ), hard runs the argmax path.
A ``KnobChoice`` mixes the same way over the values of a stage knob (FMViT's frequency split).
Candidates that take tokens are wrapped in a reshape here, so every slot maps (B, C, H, W) to
(B, C, H, W) and a supernet stage never has to know which path is active.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from supernets.config import IDENTITY
from supernets.layers import to_map, to_tokens

MODES = ("soft", "hard")


class Mixer(nn.Module):
    """Architecture logits α over a few options and the Gumbel-softmax mixing of their outputs;
    a MetaPath mixes a slot's candidate blocks, a KnobChoice the values of a stage knob."""

    def __init__(self, n: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(n))
        self.mode = "soft"
        self.tau = 1.0

    def mix(self, run) -> torch.Tensor:
        """Mix ``run(i)`` (the output of option i) over the options as the mode says."""
        if self.mode == "hard":
            if self.training:
                weights = F.gumbel_softmax(self.alpha, tau=self.tau, hard=True)
                index = int(weights.argmax())
                return weights[index] * run(index)
            return run(int(self.alpha.argmax()))
        if self.training:
            weights = F.gumbel_softmax(self.alpha, tau=self.tau, hard=False)
        else:
            weights = F.softmax(self.alpha / self.tau, dim=0)
        out = None
        for i, w in enumerate(weights):
            y = w * run(i)
            out = y if out is None else out + y
        return out

    def _probabilities(self, labels) -> dict:
        p = F.softmax(self.alpha.detach().float(), dim=0)
        return {k: float(v) for k, v in zip(labels, p)}

    def extra_repr(self) -> str:
        return f"mode={self.mode}, tau={self.tau:.3g}"


class MetaPath(Mixer):
    token_input = False

    def __init__(self, candidates: dict[str, nn.Module], choices: tuple[str, ...]):
        super().__init__(len(choices))
        self.choices = tuple(choices)
        self.paths = nn.ModuleDict({k: candidates[k] for k in self.choices if k != IDENTITY})

    def probabilities(self) -> dict[str, float]:
        return self._probabilities(self.choices)

    def _run(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        if kind == IDENTITY:
            return x
        block = self.paths[kind]
        if getattr(block, "token_input", False):
            return to_map(block(to_tokens(x)), (x.shape[2], x.shape[3]))
        return block(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(lambda i: self._run(self.choices[i], x))

    def extra_repr(self) -> str:
        return f"choices={self.choices}, " + super().extra_repr()


class KnobChoice(Mixer):
    """α over the values of a stage knob that the supernet trains every value of at once (FMViT's
    number of high-frequency branches): the block owning it calls ``mix`` with a function of the
    value index, so each value's sub-block is sampled in training like a MetaPath's candidate."""

    def __init__(self, name: str, values: tuple):
        super().__init__(len(values))
        self.name, self.values = name, tuple(values)

    def probabilities(self) -> dict:
        return self._probabilities(self.values)

    def extra_repr(self) -> str:
        return f"{self.name}={self.values}, " + super().extra_repr()


class WidthChoice(Mixer):
    """α over a stage's width options, trained by channel masking (FBNetV2): every module whose
    output channels follow the stage width gets, per forward, the mask Σ_i w_i·[c < n_i(width_i)]
    over its channels, with w the Gumbel-softmax sample over the options. Soft mode: the weighted
    sum of prefix masks; hard mode: one width per step (straight-through), so every width trains
    the prefix of the shared weights its sub-network inherits, at about the memory of one path.

    ``sample()`` draws the weights once per supernet forward (``Supernet.forward``); the masking
    hooks read them. In eval mode the weights are deterministic (soft: softmax(α/τ); hard: argmax).
    """

    def __init__(self, widths: tuple[int, ...]):
        super().__init__(len(widths))
        self.widths = tuple(widths)
        self.weights: torch.Tensor | None = None   # the current sample, set by sample()

    def sample(self) -> torch.Tensor:
        if self.training:
            self.weights = F.gumbel_softmax(self.alpha, tau=self.tau, hard=self.mode == "hard")
        elif self.mode == "hard":
            self.weights = F.one_hot(self.alpha.argmax(), len(self.widths)).to(self.alpha.dtype)
        else:
            self.weights = F.softmax(self.alpha / self.tau, dim=0)
        return self.weights

    def probabilities(self) -> dict:
        return self._probabilities(self.widths)

    def extra_repr(self) -> str:
        return f"widths={self.widths}, " + super().extra_repr()
