"""`tools/bench_noise.py --quick`: the evidence benchmarks' plumbing (corpora at each noise level, every
method trained through the training stage and evaluated on clean annotations), not their margins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_noise.py"), "--quick", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_noise_benchmark_quick(tmp_path):
    _run("--out", str(tmp_path))
    results = json.loads((tmp_path / "noise.json").read_text())
    assert set(results) == {"0%", "60%"}
    for level in results.values():
        assert set(level) == {"infonce", "norton", "norton-no-bucket", "norton-no-rectify", "norton-mean", "norton-fixed"}
        for runs in level.values():
            assert 0 <= runs[0]["t2v_R@1"] <= 100 and 0 <= runs[0]["step_seg_acc"] <= 100
    table = (tmp_path / "noise.md").read_text()
    assert "| 60% | norton |" in table and (tmp_path / "noise.png").is_file()
    assert "clip term leaves log(batch) at step" in table
    # The 60 % corpus really is noisier: fewer of its narration sentences keep their true time.
    noisy = [json.loads(x) for x in next((tmp_path / "corpora").glob("noise60-*/manifest.jsonl")).read_text().splitlines()]
    assert noisy[0]["meta"]["noise"]["shift"] == pytest.approx(0.3)


def test_hierarchy_benchmark_quick(tmp_path):
    _run("--hierarchy", "--out", str(tmp_path))
    results = json.loads((tmp_path / "hierarchy.json").read_text())
    assert set(results["default noise"]) == {"flat", "hier", "hier-grouped"}
    assert "phase_rec_acc" in results["default noise"]["hier"][0]


def test_fine_tuning_regime_starts_every_method_from_one_warm_up_run(tmp_path):
    _run("--warm-steps", "1", "--levels", "60", "--methods", "infonce,norton", "--out", str(tmp_path))
    import yaml

    warm = tmp_path / "runs" / "60-warmup1-seed0"
    assert (warm / "final" / "model.safetensors").is_file()
    for method in ("infonce", "norton"):
        cfg = yaml.safe_load((tmp_path / "runs" / f"60-warm1-{method}-seed0" / "config.yaml").read_text())
        assert cfg["train"]["init_from"] == str(warm)
    assert set(json.loads((tmp_path / "noise.json").read_text())["60%"]) == {"infonce", "norton"}


def test_plateau_exit_is_the_first_step_below_chance_by_the_margin(tmp_path):
    import math

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from bench_noise import plateau_exit
    finally:
        sys.path.remove(str(ROOT / "tools"))
    path = tmp_path / "metrics.jsonl"
    chance = math.log(16)
    rows = [{"step": 10, "clip": chance + 0.1}, {"step": 20, "clip": chance - 0.1}, {"step": 30, "val": 1.0},
            {"step": 40, "clip": chance - 0.2}, {"step": 50, "clip": 0.5}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert plateau_exit(path, 16) == 40
    assert plateau_exit(path, 16, margin=0.05) == 20
    assert plateau_exit(path, 64) == 10  # log(64) is far above every value
    path.write_text(json.dumps({"step": 10, "clip": chance}) + "\n")
    assert plateau_exit(path, 16) is None
    assert plateau_exit(tmp_path / "absent.jsonl", 16) is None


def test_gradient_report_weights_each_term_and_compares_directions():
    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from grad_terms import gradient_report
    finally:
        sys.path.remove(str(ROOT / "tools"))

    class Terms(nn.Module):  # stands in for VideoTextLoss: the report hooks its (video, text) inputs
        def forward(self, video, text):
            return {"loss": video.sum(), "clip": 3 * video[:, 0].sum(), "paragraph": 4 * video[:, 1].sum(),
                    "caption": video.sum()}

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0, 1.0]))
            self.loss = Terms()

        def forward(self, batch):
            video = nn.functional.normalize(self.w * batch["x"], dim=-1)
            return self.loss(video, video)

    x = torch.tensor([[1.0, 2.0], [2.0, -1.0]])  # orthogonal rows at w = (1, 1)
    report = gradient_report(Toy(), [{"x": x}], {"clip": 2.0, "paragraph": 0.5, "caption": 0.0}, grad_clip=1.0)
    w = torch.tensor([1.0, 1.0], requires_grad=True)  # the same expressions, differentiated one by one
    v = nn.functional.normalize(w * x, dim=-1)
    g_clip = torch.autograd.grad(2.0 * 3 * v[:, 0].sum(), w, retain_graph=True)[0]
    g_par = torch.autograd.grad(0.5 * 4 * v[:, 1].sum(), w)[0]
    assert set(report["grad_norm"]) == {"clip", "paragraph"}  # a zero weight is not a term of the objective
    assert report["grad_norm"]["clip"] == pytest.approx(float(g_clip.norm()), abs=1e-6)
    assert float(g_clip.norm()) > 0.1 and float(g_par.norm()) > 0.1
    assert report["grad_norm"]["paragraph"] == pytest.approx(float(g_par.norm()), abs=1e-6)
    assert report["total_norm"] == pytest.approx(float((g_clip + g_par).norm()), abs=1e-6)
    cos = float(torch.nn.functional.cosine_similarity(g_clip, g_par, dim=0))
    assert report["cosine"]["clip · paragraph"] == pytest.approx(cos, abs=1e-6)
    assert report["clip_scale"] == pytest.approx(min(1.0, 1.0 / float((g_clip + g_par).norm())), abs=1e-6)
    assert report["embeddings"]["video_self_cosine"] == pytest.approx(0.0, abs=1e-6)  # orthogonal rows
