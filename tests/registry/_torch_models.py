"""Torch modules for the flavor tests, in a module the child process can import.

A state-dict package rebuilds its model from an importable class, so these cannot live in
the test file (which the child interpreter does not import).
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Two layers with required constructor arguments, so rebuilding needs init_kwargs."""

    def __init__(self, n_features: int, hidden: int, n_out: int, return_hidden: bool = False):
        super().__init__()
        self.hidden = nn.Linear(n_features, hidden)
        self.out = nn.Linear(hidden, n_out)
        self.return_hidden = return_hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.hidden(x))
        logits = self.out(h)
        if self.return_hidden:
            return logits, h
        return logits
