"""Frame-label decoding (smoothing, Viterbi, background rule) and the linear probe vs references."""

from __future__ import annotations

import itertools

import pytest
import torch

from videolang.eval.probe import LinearProbe
from videolang.eval.zero_shot import BACKGROUND, background_threshold, decode, smooth, viterbi


def _path_score(scores: torch.Tensor, path, penalty: float) -> float:
    return float(sum(scores[t, k] for t, k in enumerate(path)) - penalty * sum(a != b for a, b in zip(path, path[1:])))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("penalty", [0.0, 0.3, 1.5])
def test_viterbi_finds_the_best_path(seed, penalty):
    g = torch.Generator().manual_seed(seed)
    n, k = 6, 3
    scores = torch.randn(n, k, generator=g, dtype=torch.float64)
    best = max(_path_score(scores, p, penalty) for p in itertools.product(range(k), repeat=n))
    path = viterbi(scores, penalty).tolist()
    assert _path_score(scores, path, penalty) == pytest.approx(best, abs=1e-12)


def test_viterbi_penalty_merges_short_flicker():
    scores = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 0.2]] + [[1.0, 0.0]] * 5)
    assert viterbi(scores, 0.0).tolist()[5] == 1
    assert viterbi(scores, 1.0).tolist() == [0] * 11
    assert viterbi(torch.zeros(0, 3), 1.0).numel() == 0


@pytest.mark.parametrize("window", [1, 3, 5])
def test_smooth_matches_loop(window):
    x = torch.randn(9, 4, dtype=torch.float64)
    ref = torch.stack([x[max(0, t - window // 2) : t + window // 2 + 1].mean(0) for t in range(9)])
    assert torch.allclose(smooth(x, window), ref)
    with pytest.raises(ValueError):
        smooth(x, 4)


def test_background_rule():
    labels = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=1)
    thr = background_threshold(labels)
    assert thr == pytest.approx(0.6)
    frames = torch.tensor([[0.9, 0.1], [0.5, 0.55], [0.1, 0.95]])
    assert decode(frames, background_below=thr).tolist() == [0, BACKGROUND, 1]


def test_linear_probe_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    y = torch.randint(0, 4, (400,), generator=g)
    x = centres[y] + torch.randn(400, 16, generator=g)
    probe = LinearProbe(4).fit(x[:300], y[:300])
    acc = (probe.scores(x[300:]).argmax(1) == y[300:]).float().mean()
    assert acc > 0.95
    assert torch.allclose(probe.scores(x[:5]).exp().sum(1), torch.ones(5), atol=1e-5)
