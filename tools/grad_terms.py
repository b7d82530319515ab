"""How hard each loss term pulls: per-term gradient norms and directions on a few training batches.

    DS_ACCELERATOR=cpu .venv/bin/python tools/grad_terms.py --noise-method norton \
        --manifest runs/bench_noise/corpora/noise60-seed0/manifest.jsonl [--init-from RUN] [--batches 4]
    DS_ACCELERATOR=cpu .venv/bin/python tools/grad_terms.py --config configs/x.yaml --set loss.paragraph_weight=0.1
    DS_ACCELERATOR=cpu .venv/bin/python tools/grad_terms.py --run runs/bench_noise/runs/60-norton-seed2
      (a run folder: its config.yaml and its weights, final/ or the newest checkpoint)

For every weighted term of the objective (`clip`, `paragraph`, `level/<name>`, ...) it prints the norm of
that term's gradient over all trainable parameters (weight included), the norm of their sum, the cosine
between each pair of terms, the factor that `train.grad_clip` would scale the step by, and how spread
the embeddings are (mean cosine between different clips / captions: near 1 means collapsed). A term whose
gradient is orders of magnitude larger than the others sets the direction of every step, and clipping then
shrinks the others with it: the check behind the Norton finding in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

sys.path.insert(0, str(Path(__file__).resolve().parent))


def term_weights(cfg) -> dict[str, float]:
    """Weight of each term name that `VideoTextLoss` returns."""
    loss = cfg.loss
    weights = {"clip": loss.clip_weight, "cross_level": loss.cross_level_weight,
               "paragraph": loss.paragraph_weight, "caption": loss.caption_weight}
    weights.update({f"level/{name}": w for name, w in loss.level_weights.items()})
    return weights


def gradient_report(module, batches: list[dict], weights: dict[str, float], grad_clip: float) -> dict:
    """Mean over `batches` of each weighted term's gradient norm, the total's norm, pairwise cosines."""
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    from videolang.train.module import self_similarity

    seen: list[tuple] = []  # (video, text, paragraph mask) as they reach the loss, for the collapse check
    hook = module.loss.register_forward_hook(
        lambda _m, args, kwargs, _out: seen.append((args[0].detach(), args[1].detach(), kwargs.get("paragraph_mask"))),
        with_kwargs=True,
    )
    norms: dict[str, list[float]] = {}
    cosines: dict[str, list[float]] = {}
    totals: list[float] = []
    for batch in batches:
        terms = module(batch)
        grads = {}
        for name, value in terms.items():
            if name == "loss" or weights.get(name, 0.0) == 0.0:
                continue
            g = torch.autograd.grad(weights[name] * value, params, retain_graph=True, allow_unused=True)
            grads[name] = torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)])
        for name, g in grads.items():
            norms.setdefault(name, []).append(float(g.norm()))
        names = sorted(grads)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                cos = torch.nn.functional.cosine_similarity(grads[a], grads[b], dim=0)
                cosines.setdefault(f"{a} · {b}", []).append(float(cos))
        totals.append(float(sum(grads.values()).norm()))

    hook.remove()

    def mean(v: list[float]) -> float:
        return sum(v) / len(v)

    sims = [self_similarity(v, t, None if m is None else m.flatten()) for v, t, m in seen]
    total = mean(totals)
    return {
        "embeddings": {  # mean cosine between different samples (1 = all the same), the trainer's self_sim
            "video_self_cosine": mean([float(x["self_sim/video"]) for x in sims]),
            "text_self_cosine": mean([float(x["self_sim/text"]) for x in sims]),
            "video_text_cosine_std": mean([float((v @ t.T).std()) for v, t, _ in seen]),
        },
        "grad_norm": {k: mean(v) for k, v in norms.items()},
        "total_norm": total,
        "cosine": {k: mean(v) for k, v in cosines.items()},
        "clip_scale": min(1.0, grad_clip / total) if grad_clip > 0 and total > 0 else 1.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="a run folder: its config.yaml, and its weights unless --init-from")
    p.add_argument("--config", default=None, help="a training YAML (default: the built-in defaults)")
    p.add_argument("--noise-method", default=None, help="start from tools/bench_noise.py's recipe for this method")
    p.add_argument("--manifest", default=None, help="training manifest (data.manifest)")
    p.add_argument("--init-from", default=None, help="weights of a run, checkpoint or model folder (default: fresh init)")
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--batch", type=int, default=16, help="clips per batch with --noise-method")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()

    import torch

    from videolang.config import load_config
    from videolang.losses import build_loss
    from videolang.models import build_model
    from videolang.models.caption_head import format_script
    from videolang.train.module import TrainModule
    from videolang.train.streams import build_streams
    from videolang.train.trainer import init_weights

    sets = []
    if args.noise_method:
        from bench_noise import BASE, NOISE_METHODS, paragraph_stream

        sets += [*BASE, *paragraph_stream(args.batch), *NOISE_METHODS[args.noise_method], "train.lr=2e-4"]
    if args.manifest:
        sets.append(f"data.manifest={args.manifest}")
    config = args.config
    if args.run:
        config = config or str(Path(args.run) / "config.yaml")
        args.init_from = args.init_from or args.run
    cfg = load_config(config, [*sets, "data.num_workers=0", *args.sets])
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model)
    if args.init_from:
        init_weights(model, args.init_from)
    module = TrainModule(model, build_loss(cfg.loss))
    module.train()
    streams = build_streams(cfg, model.tokenizer, model.text_encoder.max_length, rank=0, world_size=1,
                            caption_max_len=cfg.model.caption_max_len, format_script=format_script)
    try:
        batches = [streams.next(i)[1] for i in range(args.batches)]
    finally:
        streams.close()
    for b in batches:
        b.pop("failures", None)
    report = gradient_report(module, batches, term_weights(cfg), cfg.train.grad_clip)
    print(json.dumps({"run": args.run, "init_from": args.init_from, "method": args.noise_method, **report},
                     indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
