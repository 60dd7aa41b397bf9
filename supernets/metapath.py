"""MetaPath: one supernet slot holding candidate blocks and their architecture logits α.

Mixing follows the EfficientFormer paper's eq. 8 with standard Gumbel noise
(``torch.nn.functional.gumbel_softmax``; the paper writes ε ~ U(0, 1), which is the uniform
draw a Gumbel sample is made from):

* ``soft`` – weighted sum of every candidate (the paper's form);
* ``hard`` – straight-through: one sampled candidate runs forward, the gradient reaches α
  through its soft weight. Only the sampled block is computed, so a step costs about one path.
* ``uniform`` – as hard, but the one candidate is drawn uniformly (single-path one-shot, Guo et
  al. 2020), not from α: every option's weights train equally often whatever α says, and α
  learns through the candidate's weight in softmax(α/τ) (straight-through, no Gumbel noise: the
  uniform draw explores). In expectation α's gradient is the soft mixture's (Σ_i ∂L/∂w_i ·
  ∂softmax_i/∂α, each term at the path alone), scaled by 1/options. Why it exists: a hard
  supernet samples what α favours, α favours what trained fastest, and the options it starves
  rank badly (experiments/search_quality/rerank).

In eval mode the mixing is deterministic: soft uses softmax(α/τ), hard and uniform run the argmax
path.
A ``KnobChoice`` mixes the same way over the values of a stage knob (FMViT's frequency split).
Candidates that take tokens are wrapped in a reshape here, so every slot maps (B, C, H, W) to
(B, C, H, W) and a supernet stage never has to know which path is active.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from supernets.config import IDENTITY
from supernets.layers import to_map, to_tokens

MODES = ("soft", "hard", "uniform")
SINGLE_PATH = ("hard", "uniform")   # the modes that run one sampled option per step


class Mixer(nn.Module):
    """Architecture logits α over a few options and the Gumbel-softmax mixing of their outputs;
    a MetaPath mixes a slot's candidate blocks, a KnobChoice the values of a stage knob."""

    def __init__(self, n: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(n))
        self.mode = "soft"
        self.tau = 1.0

    def one_hot_sample(self) -> torch.Tensor:
        """A training sample of a single-path mode: one-hot in value, α's gradient through the
        chosen option's soft weight (straight-through). Hard draws it from Gumbel-softmax(α, τ),
        uniform draws the option uniformly (torch's RNG, so a resumed run draws the same)."""
        if self.mode == "hard":
            return F.gumbel_softmax(self.alpha, tau=self.tau, hard=True)
        soft = F.softmax(self.alpha / self.tau, dim=0)
        index = torch.randint(len(soft), ())   # the host's RNG on every device: the same draws on a GPU
        return F.one_hot(index, len(soft)).to(soft) - soft.detach() + soft

    def mix(self, run) -> torch.Tensor:
        """Mix ``run(i)`` (the output of option i) over the options as the mode says."""
        if self.mode in SINGLE_PATH:
            if self.training:
                weights = self.one_hot_sample()
                index = int(weights.detach().argmax())
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
    sum of prefix masks; hard and uniform modes: one width per step (straight-through), so every
    width trains the prefix of the shared weights its sub-network inherits, at about the memory of
    one path.

    ``sample()`` draws the weights once per supernet forward (``Supernet.forward``); the masking
    hooks read them. In eval mode the weights are deterministic (soft: softmax(α/τ); hard, uniform: argmax).
    """

    def __init__(self, widths: tuple[int, ...]):
        super().__init__(len(widths))
        self.widths = tuple(widths)
        self.weights: torch.Tensor | None = None   # the current sample, set by sample()

    def sample(self) -> torch.Tensor:
        if self.training:
            self.weights = (self.one_hot_sample() if self.mode in SINGLE_PATH
                            else F.gumbel_softmax(self.alpha, tau=self.tau, hard=False))
        elif self.mode in SINGLE_PATH:
            self.weights = F.one_hot(self.alpha.argmax(), len(self.widths)).to(self.alpha.dtype)
        else:
            self.weights = F.softmax(self.alpha / self.tau, dim=0)
        return self.weights

    def probabilities(self) -> dict:
        return self._probabilities(self.widths)

    def extra_repr(self) -> str:
        return f"widths={self.widths}, " + super().extra_repr()
