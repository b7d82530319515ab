"""Linear probe on frozen features: multinomial logistic regression, full-batch L-BFGS.

Standardises features with the training statistics and uses a small L2 penalty; full-batch L-BFGS on
per-frame features converges in a few dozen iterations and has no learning rate to tune.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class LinearProbe:
    def __init__(self, num_classes: int, l2: float = 1e-3, max_iter: int = 100):
        self.num_classes, self.l2, self.max_iter = num_classes, l2, max_iter

    def fit(self, x: Tensor, y: Tensor) -> "LinearProbe":
        x = x.double()
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - self.mean) / self.std
        self.weight = torch.zeros(z.shape[1], self.num_classes, dtype=z.dtype, requires_grad=True)
        self.bias = torch.zeros(self.num_classes, dtype=z.dtype, requires_grad=True)
        opt = torch.optim.LBFGS([self.weight, self.bias], max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(z @ self.weight + self.bias, y) + self.l2 * self.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return self

    @torch.no_grad()
    def scores(self, x: Tensor) -> Tensor:
        z = (x.double() - self.mean) / self.std
        return (z @ self.weight + self.bias).log_softmax(1).float()
