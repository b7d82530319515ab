"""Run by test_train_parts: clamp a temperature under a DeepSpeed engine (ZeRO stage, precision from argv)
and print the master and module values. One process, world of one."""

import json
import math
import sys

import torch

from videolang.config import load_config
from videolang.losses import build_loss
from videolang.models import build_model
from videolang.train.distributed import init_distributed
from videolang.train.engine import build_engine, deepspeed_config
from videolang.train.module import TrainModule
from videolang.train.optim import build_optimizer, build_scheduler

stage, precision, smoke = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg = load_config(smoke, ["data.manifest=m", f"train.zero_stage={stage}", f"train.precision={precision}",
                          "loss.paragraph_weight=0.1", "data.streams={paragraphs: 1}"])
info = init_distributed("cpu")
module = TrainModule(build_model(cfg.model), build_loss(cfg.loss))
if stage == 3:
    module.prepare_zero3()
opt = build_optimizer(module, cfg.train)
engine = build_engine(module, opt, build_scheduler(opt, cfg.train), deepspeed_config(cfg.train, info.device))
from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param  # noqa: E402

model_scale, para_scale = engine.module.model.logit_scale, engine.module.loss.paragraph.log_scale
from videolang.train.module import _unfused_master  # noqa: E402


def master_of(param):
    """The weights the optimizer steps: DeepSpeed's fp32 master, else the parameter."""
    full = safe_get_full_fp32_param(param)
    if full is not None:
        return full
    copy = _unfused_master(engine.optimizer, param)
    return copy if copy is not None else param.data


for param, value in ((model_scale, math.log(1000.0)), (para_scale, math.log(0.5))):
    if safe_get_full_fp32_param(param) is not None:
        safe_set_full_fp32_param(param, torch.full_like(safe_get_full_fp32_param(param), value))
    else:
        master_of(param).data.fill_(value)
        param.data.fill_(value)
engine.module.clamp_parameters_(engine.optimizer)
out = {name: float(master_of(param).flatten()[0]) for name, param in (("model", model_scale), ("paragraph", para_scale))}
out["dtype"] = str(master_of(model_scale).dtype)
print(json.dumps(out))
