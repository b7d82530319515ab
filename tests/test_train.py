"""`videolang train` end to end: real processes (one, torchrun, two nodes), kills, resume, ZeRO stages.

Every run uses configs/smoke.yaml on a small synthetic corpus. Runs are subprocesses so that a SIGKILL
is real and each process group starts clean. The random kill step is drawn per run and printed, so a
failure names the step that broke it (rerun with VIDEOLANG_TEST_KILL_STEP=N).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cmd(out: Path, manifest: Path, *sets: str, procs: int = 1) -> list[str]:
    args = ["train", str(SMOKE), "--set", f"data.manifest={manifest}", "--set", f"run.output_dir={out}",
            "--set", "train.progress=false"]
    for s in sets:
        args += ["--set", s]
    if procs == 1:
        return [sys.executable, "-m", "videolang", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
            "--master_port", str(_free_port()), "-m", "videolang", *args]


def run(cmd: list[str], env: dict | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=env or _env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_bitwise(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def kill_at_step(cmd: list[str], out: Path, step: int, env: dict | None = None) -> None:
    """Start a run and SIGKILL it (its whole process group) once `step` is in metrics.jsonl."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    path = out / "metrics.jsonl"
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if path.exists() and any(json.loads(line).get("step") == step
                                     for line in path.read_text().splitlines() if line.strip()):
                break
            if proc.poll() is not None:
                raise AssertionError(f"run ended before step {step}: {proc.stdout.read().decode()[-3000:]}")
            time.sleep(0.02)
        else:
            raise AssertionError(f"step {step} never logged")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def kill_step(max_steps: int) -> int:
    if "VIDEOLANG_TEST_KILL_STEP" in os.environ:
        return int(os.environ["VIDEOLANG_TEST_KILL_STEP"])
    step = random.Random().randint(1, max_steps - 1)
    print(f"killing at step {step} (VIDEOLANG_TEST_KILL_STEP={step} reproduces)")
    return step


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from videolang.data.synth import synthesize_corpus

    return synthesize_corpus(tmp_path_factory.mktemp("corpus"), 8, seed=1)


RUN = ("train.max_steps=8", "train.save_every=2", "data.levels=[task]")


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """An uninterrupted one-process run, the yardstick of the resume tests."""
    out = tmp_path_factory.mktemp("reference")
    run(train_cmd(out, corpus, *RUN, "data.num_workers=1"))
    return out


def test_plain_run_writes_the_run_folder(reference):
    for name in ("config.yaml", "metrics.jsonl", "run.json", "final/model.safetensors", "final/config.json"):
        assert (reference / name).is_file(), name
    assert list(reference.glob("tensorboard/events.*"))
    records = metrics(reference)
    assert [r["step"] for r in records] == list(range(1, 9))
    for key in ("loss", "clip", "lr", "logit_scale", "clips_per_s", "data_wait", "self_sim/video", "self_sim/text"):
        assert all(key in r for r in records), key
    assert records[0]["lr"] < records[1]["lr"]  # warmup
    assert records[-1]["lr"] < max(r["lr"] for r in records)  # cosine decay
    summary = json.loads((reference / "run.json").read_text())
    assert summary["steps"] == 8 and summary["world_size"] == 1 and summary["versions"]["deepspeed"]
    # keep_last = 2: only the two newest complete checkpoints remain.
    assert sorted(p.name for p in (reference / "checkpoints").iterdir()) == ["step-6", "step-8"]
    assert all((reference / "checkpoints" / n / "COMPLETE").is_file() for n in ("step-6", "step-8"))


def test_sigkill_then_resume_is_bitwise_equal(corpus, reference, tmp_path):
    out = tmp_path / "run"
    step = kill_step(8)
    cmd = train_cmd(out, corpus, *RUN, "data.num_workers=1")
    kill_at_step(cmd, out, step)
    complete = sorted(p.parent.name for p in out.glob("checkpoints/*/COMPLETE"))
    proc = run(cmd)
    if complete:  # the newest checkpoint that was complete at the kill is the one resumed from
        newest = max(complete, key=lambda name: int(name.split("-")[1]))
        assert f"resumed from {out / 'checkpoints' / newest}" in proc.stdout
    assert_bitwise(reference / "final", out / "final")
    # metrics.jsonl was cut back to the resumed step: no step logged twice, same losses.
    assert [r["step"] for r in metrics(out)] == list(range(1, 9))
    assert [r["loss"] for r in metrics(out)] == [r["loss"] for r in metrics(reference)]


def test_kill_during_checkpoint_save_keeps_the_previous_one(corpus, reference, tmp_path):
    out = tmp_path / "run"
    cmd = train_cmd(out, corpus, *RUN, "data.num_workers=1")
    proc = run(cmd, env=_env(VIDEOLANG_FAULT="kill-in-save:4"), check=False)
    assert proc.returncode == -signal.SIGKILL
    step4 = out / "checkpoints" / "step-4"
    assert step4.is_dir() and (step4 / "engine").is_dir() and not (step4 / "COMPLETE").exists()
    proc = run(cmd)
    assert f"resumed from {out / 'checkpoints' / 'step-2'} at step 2" in proc.stdout
    assert_bitwise(reference / "final", out / "final")


def test_resume_refuses_another_shape_in_one_line(corpus, reference, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    proc = run(train_cmd(out, corpus, *RUN, "train.batch_size=2"), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("videolang train: error:") and "micro_batch was 4, now 2" in lines[-1]


def test_misspelt_key_fails_before_any_work(corpus, tmp_path):
    out = tmp_path / "run"
    proc = run(train_cmd(out, corpus, "train.max_step=3"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("videolang train: error: --set train.max_step=3: unknown config key "
                                   "'train.max_step' (did you mean 'max_steps'?)")
    assert not out.exists()
    proc = run(train_cmd(out, corpus, "loss.caption_weight=1.0"), check=False)
    assert proc.returncode == 2 and "model.caption_head" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_init_from_starts_from_another_runs_weights(corpus, reference, tmp_path):
    # With a vanishing learning rate one step barely moves the weights: they must be the reference's
    # final weights, not a fresh initialisation (which differs by far more than the tolerance).
    out = tmp_path / "finetune"
    run(train_cmd(out, corpus, "train.max_steps=1", "train.lr=1e-12", "train.warmup_steps=0", "data.levels=[task]",
                  f"train.init_from={reference}"))
    start, tuned = weights(reference / "final"), weights(out / "final")
    assert start.keys() == tuned.keys()
    for name in start:
        torch.testing.assert_close(tuned[name], start[name], rtol=0, atol=1e-6, msg=name)
    fresh = tmp_path / "fresh"
    run(train_cmd(fresh, corpus, "train.max_steps=1", "train.lr=1e-12", "train.warmup_steps=0", "data.levels=[task]"))
    assert any((weights(fresh / "final")[k] - start[k]).abs().max() > 1e-3 for k in start)

    bad = run(train_cmd(tmp_path / "bad", corpus, "train.max_steps=1", "model.embed_dim=16",
                        f"train.init_from={reference}"), check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "train.init_from:" in bad.stderr and "model.safetensors" in bad.stderr
    missing = run(train_cmd(tmp_path / "none", corpus, f"train.init_from={tmp_path / 'nowhere'}"), check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr, missing.stderr


def test_broken_videos_are_skipped_and_named(tmp_path):
    from videolang.data.synth import synthesize_corpus

    manifest = synthesize_corpus(tmp_path / "corpus", 10, seed=2)
    train_videos = [json.loads(line) for line in manifest.read_text().splitlines()]
    train_videos = [v for v in train_videos if v["split"] == "train"]
    broken = [manifest.parent / v["path"] for v in train_videos[: max(1, len(train_videos) // 5)]]
    for path in broken:
        path.write_bytes(b"\x00not a video" * 100)
    out = tmp_path / "run"
    proc = run(train_cmd(out, manifest, "train.max_steps=12", "train.save_every=6", "data.levels=[task]"))
    summary = json.loads((out / "run.json").read_text())
    assert summary["steps"] == 12
    named = set(summary["broken_videos"])
    assert named == {str(p) for p in broken}
    assert all(str(p) in proc.stdout for p in broken)


def test_nonfinite_loss_is_dropped_then_stops_cleanly(corpus, tmp_path):
    out = tmp_path / "skip"
    run(train_cmd(out, corpus, "train.max_steps=4", "train.inject_nonfinite=[2]", "data.levels=[task]"))
    records = metrics(out)
    assert records[-1]["nonfinite_dropped"] == 1 and len(records) == 4
    assert all(torch.isfinite(t).all() for t in weights(out / "final").values())

    out = tmp_path / "stop"
    proc = run(train_cmd(out, corpus, "train.max_steps=6", "train.inject_nonfinite=[3,4]", "train.max_nonfinite=1",
                         "data.levels=[task]"), check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("videolang train: error: non-finite loss at step 4") and "term 'loss'" in last
    assert (out / "checkpoints" / "step-3" / "COMPLETE").is_file()  # the last good step was saved


def test_export_from_checkpoint_equals_export_of_saved_weights(reference, tmp_path):
    from videolang.cli import main
    from videolang.models import VideoTextModel

    checkpoint = reference / "checkpoints" / "step-8"
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "from_ckpt")]) == 0
    direct = tmp_path / "direct"
    VideoTextModel.from_pretrained(reference / "final").save_pretrained(direct)
    assert main(["export", str(direct), "--out", str(tmp_path / "from_direct")]) == 0
    assert_bitwise(tmp_path / "from_ckpt", tmp_path / "from_direct")
    assert main(["export", str(reference), "--out", str(tmp_path / "from_run")]) == 0  # a run folder: final/
    assert_bitwise(tmp_path / "from_run", tmp_path / "from_direct")


def test_eval_takes_a_run_or_checkpoint_folder(corpus, reference, tmp_path):
    from videolang.cli import main

    results = []
    for model in (reference, reference / "checkpoints" / "step-8", reference / "final"):
        out = tmp_path / model.name
        assert main(["eval", "retrieval", "--model", str(model), "--manifest", str(corpus), "--level", "task",
                     "--num-frames", "4", "--out", str(out), "--no-progress"]) == 0
        results.append(json.loads((out / "results.json").read_text())["t2v"])
    assert results[0] == results[1] == results[2]  # the same weights: final/ and the last checkpoint's model/


# --------------------------------------------------------------------------------------------------
# Several processes


@pytest.mark.distributed
def test_torchrun_two_processes_kill_and_resume(corpus, tmp_path):
    sets = ("train.max_steps=6", "train.save_every=2", "data.levels=[task]", "train.batch_size=2")
    ref = tmp_path / "ref"
    run(train_cmd(ref, corpus, *sets, procs=2))
    assert json.loads((ref / "run.json").read_text())["world_size"] == 2
    out = tmp_path / "run"
    cmd = train_cmd(out, corpus, *sets, procs=2)
    kill_at_step(cmd, out, kill_step(6))
    run(cmd)
    # gloo sums two ranks' gradients in a fixed order, so a resumed run repeats the same arithmetic.
    assert_bitwise(ref / "final", out / "final")
    assert [r["loss"] for r in metrics(out)] == [r["loss"] for r in metrics(ref)]


@pytest.mark.distributed
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stages_train_on_two_ranks(corpus, tmp_path, stage):
    out = tmp_path / f"zero{stage}"
    # No dropout: each rank draws its own dropout masks, which a single process cannot reproduce.
    common = ("train.max_steps=2", "train.save_every=2", "data.levels=[task]", "model.text_dropout=0.0")
    # ZeRO-3 also validates: every rank gathers the partitioned weights, rank 0 evaluates.
    val = (f"data.val_manifest={corpus}", "data.val_level=task", "train.val_every=1") if stage == 3 else ()
    run(train_cmd(out, corpus, *common, *val, "train.batch_size=2", f"train.zero_stage={stage}", procs=2))
    records = [r for r in metrics(out) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2] and all(r["loss"] == r["loss"] for r in records)
    if stage == 3:
        assert [r["step"] for r in metrics(out) if "val/t2v.R@1" in r] == [1, 2]
    assert (out / "checkpoints" / "step-2" / "COMPLETE").is_file()
    if stage == 2:
        # Two ranks of 2 = one rank of 4: the same samples (the shards interleave one permutation), the
        # same mean loss and gradient up to float summation order.
        single = tmp_path / "single"
        run(train_cmd(single, corpus, *common, "train.batch_size=4"))
        for a, b in zip(records, metrics(single)):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        wa, wb = weights(out / "final"), weights(single / "final")
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)


@pytest.mark.distributed
def test_two_nodes_on_loopback_train_and_resume(corpus, tmp_path):
    out = tmp_path / "run"

    def launch(max_steps: int) -> None:
        port = _free_port()
        procs = []
        for node in range(2):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
                   "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                   "--rdzv_id", "videolang-test", "-m", "videolang", "train", str(SMOKE),
                   "--set", f"data.manifest={corpus}", "--set", f"run.output_dir={out}", "--set", "train.progress=false",
                   "--set", f"train.max_steps={max_steps}", "--set", "train.save_every=2", "--set", "data.levels=[task]",
                   "--set", "train.batch_size=2"]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        logs = [p.communicate(timeout=300)[0].decode() for p in procs]
        assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
        return logs

    launch(2)
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    logs = launch(4)
    assert f"resumed from {out / 'checkpoints' / 'step-2'} at step 2" in logs[0] + logs[1]
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]


def test_validation_is_logged_and_changes_nothing(corpus, reference, tmp_path):
    out = tmp_path / "run"
    run(train_cmd(out, corpus, *RUN, "data.num_workers=1", f"data.val_manifest={corpus}", "data.val_level=task",
                  "train.val_every=4"))
    lines = metrics(out)
    val = [r for r in lines if "val/t2v.R@1" in r]
    assert [r["step"] for r in val] == [4, 8]  # every 4 steps and at the end
    summary = json.loads((out / "run.json").read_text())
    assert 0 <= summary["validation"]["t2v"]["R@1"] <= 100 and summary["validation"]["clips"] > 0
    # Validation restores every random generator: the training run is bit for bit the reference run.
    assert_bitwise(reference / "final", out / "final")
    assert [r["loss"] for r in lines if "loss" in r] == [r["loss"] for r in metrics(reference)]


@pytest.mark.distributed
def test_deepspeed_launcher_runs_the_same_command(corpus, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(_free_port()),
           "--module", "videolang", "train", str(SMOKE), "--set", f"data.manifest={corpus}",
           "--set", f"run.output_dir={out}", "--set", "train.progress=false", "--set", "train.max_steps=2",
           "--set", "data.levels=[task]", "--set", "train.batch_size=2"]
    env = _env()
    env.pop("OMP_NUM_THREADS")  # the launcher sets no thread count: the trainer shares the cores itself
    run(cmd, env=env)
    summary = json.loads((out / "run.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
