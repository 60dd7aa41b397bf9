"""MetaPath: one supernet slot holding candidate blocks and their architecture logits α.

Mixing follows the EfficientFormer paper's eq. 8 with standard Gumbel noise
(``torch.nn.functional.gumbel_softmax``; the paper writes ε ~ U(0, 1), which is the uniform
draw a Gumbel sample is made from):

* ``soft`` – weighted sum of every candidate (the paper's form);
* ``hard`` – straight-through: one sampled candidate runs forward, the gradient reaches α
  through its soft weight. Only the sampled block is computed, so a step costs about one path.

In eval mode the mixing is deterministic: soft uses softmax(α/τ), hard runs the argmax path.
Candidates that take tokens are wrapped in a reshape here, so every slot maps (B, C, H, W) to
(B, C, H, W) and a supernet stage never has to know which path is active.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from supernets.config import IDENTITY
from supernets.layers import to_map, to_tokens

MODES = ("soft", "hard")


class MetaPath(nn.Module):
    token_input = False

    def __init__(self, candidates: dict[str, nn.Module], choices: tuple[str, ...]):
        super().__init__()
        self.choices = tuple(choices)
        self.paths = nn.ModuleDict({k: candidates[k] for k in self.choices if k != IDENTITY})
        self.alpha = nn.Parameter(torch.zeros(len(self.choices)))
        self.mode = "soft"
        self.tau = 1.0

    def probabilities(self) -> dict[str, float]:
        p = F.softmax(self.alpha.detach().float(), dim=0)
        return {k: float(v) for k, v in zip(self.choices, p)}

    def _run(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        if kind == IDENTITY:
            return x
        block = self.paths[kind]
        if getattr(block, "token_input", False):
            return to_map(block(to_tokens(x)), (x.shape[2], x.shape[3]))
        return block(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "hard":
            if self.training:
                weights = F.gumbel_softmax(self.alpha, tau=self.tau, hard=True)
                index = int(weights.argmax())
                return weights[index] * self._run(self.choices[index], x)
            return self._run(self.choices[int(self.alpha.argmax())], x)
        if self.training:
            weights = F.gumbel_softmax(self.alpha, tau=self.tau, hard=False)
        else:
            weights = F.softmax(self.alpha / self.tau, dim=0)
        out = None
        for w, kind in zip(weights, self.choices):
            y = w * self._run(kind, x)
            out = y if out is None else out + y
        return out

    def extra_repr(self) -> str:
        return f"choices={self.choices}, mode={self.mode}, tau={self.tau:.3g}"
