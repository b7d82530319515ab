"""The training loop: streams -> TrainModule under DeepSpeed -> checkpoints, logs, validation.

One optimizer step = `grad_accum` finite micro-batches. A micro-batch whose loss is non-finite on any
rank is dropped on every rank before its backward pass (so collectives stay matched and the weights
never see it); after `train.max_nonfinite` drops the run saves a checkpoint of the last completed step
and stops with one line naming the step and the term.
"""

from __future__ import annotations

import copy
import logging
import math
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from videolang import __version__
from videolang.config import Config, save_config
from videolang.data.datasets import DecodeFailureLog
from videolang.errors import ConfigError, VideolangError
from videolang.losses import build_loss
from videolang.models import VideoTextModel, build_model
from videolang.train import checkpoint as ckpt
from videolang.train.checks import check_train_config
from videolang.train.distributed import DistInfo, any_true, barrier, init_distributed
from videolang.train.engine import build_engine, deepspeed_config
from videolang.train.logging import MetricsLogger, Throughput
from videolang.train.module import DIAGNOSTICS, TrainModule
from videolang.train.optim import build_optimizer, build_scheduler
from videolang.train.streams import build_streams, hash_seed
from videolang.utils.io import atomic_write_json

log = logging.getLogger("videolang.train")

# validate(model, step) -> metrics; called on rank 0 with the full (gathered) model in eval mode.
Validator = Callable[[VideoTextModel, int], dict]


class NonFiniteLoss(VideolangError):
    """Too many non-finite losses: the run stopped after saving its last good step."""


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _merge_failures(local: DecodeFailureLog) -> dict[str, int]:
    """Broken-video counts summed over ranks (every rank calls this)."""
    import torch.distributed as dist

    counts = dict(local.counts)
    if dist.is_initialized() and dist.get_world_size() > 1:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, counts)
        counts = {}
        for part in parts:
            for path, n in part.items():
                counts[path] = counts.get(path, 0) + n
    return dict(sorted(counts.items()))


def mean_terms(sums: dict[str, torch.Tensor], counts: dict[str, int], device: torch.device) -> dict[str, float]:
    """Per-term means over the logged micro-batches of every rank: summed values / summed counts.

    Ranks may log different keys (a diagnostic needs two valid samples, which a padded paragraph
    micro-batch can lack), so the union of the keys is reduced, a key absent on a rank counting 0 there:
    the collectives always match and nothing hangs.
    """
    import torch.distributed as dist

    keys = sorted(sums)
    distributed = dist.is_initialized() and dist.get_world_size() > 1
    if distributed:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, keys)
        keys = sorted(set().union(*parts))
    if not keys:
        return {}
    zero = torch.zeros((), dtype=torch.float64, device=device)
    t = torch.stack([
        torch.stack([sums[k].to(device, torch.float64) if k in sums else zero,
                     torch.tensor(float(counts.get(k, 0)), dtype=torch.float64, device=device)])
        for k in keys
    ])
    if distributed:
        dist.all_reduce(t)
    return {k: total / n for k, (total, n) in zip(keys, t.tolist()) if n > 0}


def init_weights(model: VideoTextModel, source: str | Path) -> None:
    """Load the weights of a run, checkpoint or model folder into a freshly built model (fine-tuning).

    The folder must hold a model of the same architecture: every tensor has to match by name and shape.
    """
    from videolang.models.errors import ModelError
    from videolang.models.serialization import load_weights
    from videolang.train.layout import resolve_model_folder

    source = Path(source)
    if not source.exists():
        raise ConfigError(f"train.init_from: {source} does not exist")
    folder = resolve_model_folder(source)
    try:
        load_weights(model, folder)
    except ModelError as e:
        raise ConfigError(f"train.init_from: {e} (the model section must describe the same architecture)") from None


class Trainer:
    def __init__(self, cfg: Config, resume: str = "auto", validate: Optional[Validator] = None):
        check_train_config(cfg)
        self.cfg = cfg
        self.resume = resume
        self.validate_fn = validate
        self.out = Path(cfg.run.output_dir)
        self.step_ends: list[float] = []  # wall clock at the end of each step (benchmarks read it)

    # ------------------------------------------------------------------------------------------
    # Set-up

    def _setup(self) -> None:
        cfg = self.cfg
        self.info: DistInfo = init_distributed(cfg.train.device)
        info = self.info
        ds_config = deepspeed_config(cfg.train, info.device)
        self.micro_batch = int(ds_config["train_micro_batch_size_per_gpu"])
        self.accum = int(ds_config["gradient_accumulation_steps"])
        self.zero_stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
        if self.micro_batch != cfg.train.batch_size:
            cfg.train.batch_size = self.micro_batch  # the user's DeepSpeed file won: streams follow it
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        barrier()
        folder = ckpt.resolve_resume(self.resume, self.out) if info.is_main else None
        from videolang.train.distributed import broadcast_object

        folder = broadcast_object(None if folder is None else str(folder))
        self.resumed_from = Path(folder) if folder else None
        if self.resumed_from is None and ckpt.list_checkpoints(self.out):
            raise ckpt.CheckpointError(
                f"{self.out / 'checkpoints'} already holds checkpoints of another run; resume it with --resume auto, "
                "or choose another run.output_dir (or remove them) to start fresh"
            )

        _seed_all(cfg.run.seed)  # identical initial weights on every rank (DeepSpeed also broadcasts them)
        model = build_model(cfg.model)
        if cfg.train.init_from and self.resumed_from is None:
            init_weights(model, cfg.train.init_from)
            if info.is_main:
                print(f"initialised from {cfg.train.init_from}", flush=True)
        loss = build_loss(cfg.loss)
        module = TrainModule(model, loss).to(info.device)
        if self.zero_stage == 3:
            module.prepare_zero3()
        optimizer = build_optimizer(module, cfg.train)
        scheduler = build_scheduler(optimizer, cfg.train)
        self.engine = build_engine(module, optimizer, scheduler, ds_config)
        self.shape = {"world_size": info.world_size, "micro_batch": self.micro_batch, "grad_accum": self.accum,
                      "zero_stage": self.zero_stage}
        self.state = ckpt.TrainState(shape=self.shape)
        if self.resumed_from is not None:
            saved = ckpt.read_state(self.resumed_from)
            ckpt.check_shape(saved, self.shape, self.resumed_from)
            ckpt.load_checkpoint(self.engine, self.resumed_from, info.rank)
            self.state = replace(saved, shape=self.shape)
            if info.is_main:
                print(f"resumed from {self.resumed_from} at step {self.state.step}", flush=True)
        else:
            _seed_all(hash_seed(cfg.run.seed, "rank", info.rank))  # per-rank randomness (token drop, dropout)
        self.failures = DecodeFailureLog()
        if info.is_main:  # rank 0 carries the counts of earlier segments of the run; merging sums ranks
            self.failures.counts.update(self.state.broken_videos)

        text = model.text_encoder
        from videolang.models.caption_head import format_script

        self.streams = build_streams(
            cfg, model.tokenizer, text.max_length, rank=info.rank, world_size=info.world_size,
            positions=self.state.positions or None,
            caption_max_len=cfg.model.caption_max_len, format_script=format_script,
        )
        self.logger = MetricsLogger(self.out, info.is_main, self.state.step if self.resumed_from else None)

    @property
    def module(self) -> TrainModule:
        return self.engine.module

    # ------------------------------------------------------------------------------------------
    # Loop

    def run(self) -> dict[str, Any]:
        self._setup()
        return self._loop()

    def _loop(self) -> dict[str, Any]:
        cfg, info, state = self.cfg, self.info, self.state
        t = cfg.train
        t_start = time.perf_counter()
        bar = None
        if info.is_main and t.progress:
            from tqdm import tqdm

            bar = tqdm(total=t.max_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True)
        speed = Throughput()
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        last_record: dict[str, Any] = {}
        val_metrics: dict[str, Any] = {}
        inject = set(t.inject_nonfinite)
        boundary = copy.deepcopy(state)  # the state as of the last completed step
        self.engine.train()
        try:
            while state.step < t.max_steps:
                lr = float(self.engine.get_lr()[0])  # the rate this step applies
                done = 0
                while done < self.accum:
                    t0 = time.perf_counter()
                    name, batch = self.streams.next(state.micro_step)
                    self.failures.update(batch.pop("failures", []))
                    batch = _to_device(batch, info.device)
                    wait = time.perf_counter() - t0
                    micro = state.micro_step
                    state.micro_step += 1
                    terms = self.engine(batch)
                    loss = terms["loss"]
                    if micro in inject:
                        loss = loss * float("nan")
                    bad_term = self._nonfinite_term(terms, loss)
                    if any_true(bad_term is not None, info.device):
                        state.nonfinite += 1
                        self._warn_nonfinite(state, micro, name, bad_term)
                        if state.nonfinite > t.max_nonfinite:
                            self._stop_nonfinite(boundary, micro, name, bad_term)
                        continue  # dropped on every rank, before backward
                    self.engine.backward(loss)
                    self.engine.step()
                    done += 1
                    speed.add(int(batch["frames"].shape[0]) * (batch["frames"].shape[1] if batch["frames"].dim() == 6 else 1), wait)
                    for key, value in terms.items():  # kept on the device: read only when logging
                        sums[key] = sums.get(key, 0.0) + value.detach().double()
                        counts[key] = counts.get(key, 0) + 1
                state.step += 1
                self.module.clamp_parameters_(self.engine.optimizer)
                self.step_ends.append(time.perf_counter())
                state.positions = self.streams.positions()
                if bar is not None:
                    bar.update(1)
                if state.step % t.log_every == 0 or state.step == t.max_steps:
                    last_record = self._log(state, sums, counts, speed, bar, lr)
                    sums, counts = {}, {}
                    speed.reset()
                if t.val_every and state.step % t.val_every == 0 and state.step < t.max_steps:
                    val_metrics = self._validate(state.step)
                if state.step % t.save_every == 0 or state.step == t.max_steps:
                    self._save(state)
                boundary = copy.deepcopy(state)
            if self.validate_fn is not None:
                val_metrics = self._validate(state.step)
            final = self._save_final()
        finally:
            if bar is not None:
                bar.close()
            self.streams.close()
            self.logger.close()
        result = {
            "final": str(final) if final else None,
            "steps": state.step,
            "metrics": last_record,
            "validation": val_metrics,
            "nonfinite_dropped": state.nonfinite,
            "broken_videos": state.broken_videos,
            "seconds": round(time.perf_counter() - t_start, 1),
        }
        self._write_run_json(result)
        return result

    # ------------------------------------------------------------------------------------------
    # Pieces

    @staticmethod
    def _nonfinite_term(terms: dict[str, torch.Tensor], loss: torch.Tensor) -> Optional[str]:
        if bool(torch.isfinite(loss.detach()).all()):
            return None
        for key, value in terms.items():
            if key != "loss" and not bool(torch.isfinite(value.detach()).all()):
                return key
        return "loss"

    def _warn_nonfinite(self, state: ckpt.TrainState, micro: int, stream: str, term: Optional[str]) -> None:
        if self.info.is_main:
            where = f"term '{term}'" if term else "another rank's loss"
            log.warning("step %d (micro-step %d, stream %s): non-finite %s; micro-batch dropped (%d of at most %d)",
                        state.step + 1, micro, stream, where, state.nonfinite, self.cfg.train.max_nonfinite)

    def _stop_nonfinite(self, boundary: ckpt.TrainState, micro: int, stream: str, term: Optional[str]) -> None:
        """Save the last completed step (weights never saw a non-finite gradient) and stop."""
        folder = self._save(boundary)
        raise NonFiniteLoss(
            f"non-finite loss at step {boundary.step + 1} (micro-step {micro}, stream {stream}, term "
            f"'{term or 'on another rank'}') after {self.cfg.train.max_nonfinite} dropped micro-batches; "
            f"last good state saved in {folder}"
        )

    def _log(self, state: ckpt.TrainState, sums, counts, speed: Throughput, bar, lr: float) -> dict[str, Any]:
        means = mean_terms(sums, counts, self.info.device)
        clips_per_s, wait = speed.read()
        model = self.module.model
        record: dict[str, Any] = {
            "step": state.step,
            "loss": means.pop("loss", math.nan),
            **means,
            "lr": lr,
            "logit_scale": float(model.logit_scale.detach().float().exp().flatten()[0]) if model.logit_scale.numel() else math.nan,
            "clips_per_s": round(clips_per_s * self.info.world_size, 2),
            "data_wait": round(wait, 4),
            "nonfinite_dropped": state.nonfinite,
        }
        self.logger.log(record)
        if bar is not None:
            terms = " ".join(f"{k}={v:.3f}" for k, v in means.items() if k not in DIAGNOSTICS)
            bar.set_postfix_str(f"loss={record['loss']:.3f} {terms} {record['clips_per_s']:.1f} clips/s "
                                f"wait={100 * wait:.0f}%", refresh=False)
        return record

    def _gathered(self):
        """Context in which the full weights are present (ZeRO-3 partitions them; every rank enters)."""
        from contextlib import nullcontext

        import deepspeed

        if self.zero_stage == 3:
            return deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None)
        return nullcontext()

    def _validate(self, step: int) -> dict[str, Any]:
        """Rank 0 evaluates (random generators untouched, so validation never changes training); the
        others wait. Under ZeRO-3 every rank gathers the weights, rank 0 copies them into a plain model
        (a forward pass of the partitioned module would issue collectives the waiting ranks never join)."""
        if self.validate_fn is None:
            return {}
        metrics: dict[str, Any] = {}
        model = self.module.model
        if self.zero_stage == 3:
            scratch = self.out / "val" / f".model-step-{step}"
            with self._gathered():
                if self.info.is_main:
                    model.save_pretrained(scratch)
            if self.info.is_main:
                model = VideoTextModel.from_pretrained(scratch).to(self.info.device)
                shutil.rmtree(scratch, ignore_errors=True)
        if self.info.is_main:
            saved = ckpt.rng_state()
            was_training = model.training
            model.eval()
            try:
                metrics = self.validate_fn(model, step)
            finally:
                model.train(was_training)
                ckpt.set_rng_state(saved)
            self.logger.log({"step": step, **{f"val/{k}": v for k, v in _flatten(metrics).items()}})
        barrier()
        return metrics

    def _save(self, state: ckpt.TrainState) -> Path:
        state.broken_videos = _merge_failures(self.failures) if self.info.world_size > 1 else dict(self.failures.counts)
        folder = ckpt.save_checkpoint(self.engine, self.module.model, state, self.out, rank=self.info.rank,
                                      world_size=self.info.world_size, zero_stage=self.zero_stage)
        if self.info.is_main:
            ckpt.prune_checkpoints(self.out, self.cfg.train.keep_last)
        return folder

    def _save_final(self) -> Optional[Path]:
        folder = self.out / "final"
        with self._gathered():
            if self.info.is_main:
                self.module.model.save_pretrained(folder)
        barrier()
        return folder if self.info.is_main else None

    def _write_run_json(self, result: dict[str, Any]) -> None:
        if not self.info.is_main:
            return
        import deepspeed
        import transformers

        run = {
            "config": str(self.out / "config.yaml"),
            "versions": {"videolang": __version__, "python": platform.python_version(), "torch": torch.__version__,
                         "deepspeed": deepspeed.__version__, "transformers": transformers.__version__},
            "world_size": self.info.world_size,
            "device": str(self.info.device) if self.info.device.type == "cpu" else torch.cuda.get_device_name(self.info.device),
            "precision": self.cfg.train.precision,
            "zero_stage": self.zero_stage,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "peak_memory_mb": _peak_memory_mb(self.info.device),
            "command": " ".join(sys.argv),
            **result,
        }
        atomic_write_json(self.out / "run.json", run)


def _peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Rank 0's peak host RSS and, on a GPU, its peak allocated device memory."""
    out = {"host_rss": _host_peak_rss_mb()}
    if device.type == "cuda":
        out["device_allocated"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def _host_peak_rss_mb() -> float:
    """This process's peak RSS. /proc's VmHWM starts afresh at exec; getrusage's ru_maxrss keeps the
    peak of the process that forked us (a launcher, a benchmark), so it is only the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def train(cfg: Config, resume: str = "auto", validate: Optional[Validator] = None) -> dict[str, Any]:
    """Train as configured; returns the summary also written to `<output_dir>/run.json` (rank 0)."""
    return Trainer(cfg, resume, validate).run()
