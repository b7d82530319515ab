"""Turn frame-label similarities into per-frame predictions: smoothing, background, Viterbi decoding.

All functions take `scores` [N, K] (frames x classes) and return class indices [N] (or -1 for
background), so recognition, segmentation, zero-shot and linear-probe paths share one decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BACKGROUND = -1


def smooth(scores: Tensor, window: int) -> Tensor:
    """Centred moving average over time (odd `window`; edges use the frames available)."""
    if window <= 1:
        return scores
    if window % 2 == 0:
        raise ValueError(f"smoothing window must be odd, got {window}")
    x = scores.T[None]  # [1, K, N]
    kernel = torch.ones(scores.shape[1], 1, window, dtype=scores.dtype) / window
    num = F.conv1d(x, kernel, padding=window // 2, groups=scores.shape[1])
    den = F.conv1d(torch.ones_like(x[:, :1]), kernel[:1], padding=window // 2)
    return (num / den)[0].T


def background_threshold(label_emb: Tensor) -> float:
    """The largest similarity between two different label embeddings: a frame whose best label is not
    more similar than that is called background (the COIN zero-shot rule)."""
    sim = label_emb @ label_emb.T
    sim.fill_diagonal_(float("-inf"))
    return float(sim.max()) if label_emb.shape[0] > 1 else float("-inf")


def viterbi(scores: Tensor, switch_penalty: float) -> Tensor:
    """Best label path maximising sum of scores minus `switch_penalty` per label change.

    O(N·K) time: at each step the best predecessor is either the same label or the overall best one.
    """
    n, k = scores.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    total = scores[0].clone()
    back = torch.zeros(n, k, dtype=torch.long)
    arange = torch.arange(k)
    for t in range(1, n):
        best_val, best_idx = total.max(0)
        switch = best_val - switch_penalty
        stay_better = total >= switch
        back[t] = torch.where(stay_better, arange, best_idx)
        total = torch.where(stay_better, total, switch) + scores[t]
    path = torch.empty(n, dtype=torch.long)
    path[-1] = total.argmax()
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def decode(scores: Tensor, *, smooth_window: int = 1, switch_penalty: float = 0.0,
           background_below: float | None = None) -> Tensor:
    """Scores [N, K] -> labels [N]: optional smoothing, then Viterbi (penalty > 0) or argmax, then
    frames whose best raw score is not above `background_below` become `BACKGROUND`."""
    s = smooth(scores, smooth_window)
    labels = viterbi(s, switch_penalty) if switch_penalty > 0 else s.argmax(1)
    if background_below is not None:
        best = s.gather(1, labels[:, None])[:, 0]
        labels = torch.where(best > background_below, labels, torch.full_like(labels, BACKGROUND))
    return labels
