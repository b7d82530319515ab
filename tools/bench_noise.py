"""Evidence benchmarks: does Norton's optimal transport help on noisy narration, does hierarchy help?

    DS_ACCELERATOR=cpu .venv/bin/python tools/bench_noise.py                 # noise table (long)
    DS_ACCELERATOR=cpu .venv/bin/python tools/bench_noise.py --hierarchy     # hierarchy table
    DS_ACCELERATOR=cpu .venv/bin/python tools/bench_noise.py --quick         # plumbing only (~1 min)

Noise: synthetic corpora at 0 %, 30 % and 60 % narration noise (shifted sentences, irrelevant sentences,
clips nobody talks about, in equal parts of the noise level), trained on the narration alone (the
`paragraphs` stream: K consecutive narrated clips per video) with
- `infonce`: plain symmetric InfoNCE over the clips of the batch (the baseline);
- `norton`: + faulty-negative rectification (beta 0.3) + video-paragraph OT with the prompt bucket
  (weight 0.1, soft-max fine similarity);
- ablations: `norton-no-bucket`, `norton-no-rectify`, `norton-mean` (pooled cosine only, no soft-max);
- `norton-fixed`: Norton with similarities mapped to [0, 1] by (x + 1) / 2 instead of batch min-max.
Every method gets the same steps, batch, learning rate and seeds; evaluation uses the *clean* curated
annotations of held-out videos: task-clip text->video retrieval and zero-shot step segmentation.

Hierarchy: the same corpus (default noise) trained on curated segments, `hier` (phase + step + task pairs,
per-level InfoNCE and the cross-level term), `hier-grouped` (the same with micro-batches filled by whole
videos, `data.group_by_video`) vs `flat` (task captions only), equal budget and seeds,
evaluated by zero-shot phase recognition and step segmentation.

`--warm-steps N` runs the fine-tuning regime instead: every method starts from the same plain-InfoNCE run of
N steps (per corpus and seed) and trains `--steps` more, as Norton fine-tunes a pretrained VideoCLIP.

Results: mean +- std over seeds, a markdown table (for the noise runs also the step at which each run's clip
term leaves its log(batch) plateau: late or never means the towers collapsed, see docs/benchmarks.md), a
JSON file and a plot (metric vs noise per method).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

BASE = [  # the shared training recipe: small video tower, pretrained MiniLM text tower
    "model.video_encoder=small", "model.text_encoder=minilm", "model.embed_dim=64", "model.temporal_layers=1",
    "model.max_frames=8", "data.num_frames=4", "data.image_size=64", "data.augment=false", "data.num_workers=1",
    "train.warmup_steps=10", "train.device=cpu", "train.log_every=10", "train.progress=false",
    "data.split=train",
]
NOISE_METHODS = {
    "infonce": ["loss.clip_weight=1.0"],
    "norton": ["loss.clip_weight=1.0", "loss.rectify_beta=0.3", "loss.paragraph_weight=0.1"],
    "norton-no-bucket": ["loss.clip_weight=1.0", "loss.rectify_beta=0.3", "loss.paragraph_weight=0.1",
                         "loss.use_bucket=false"],
    "norton-no-rectify": ["loss.clip_weight=1.0", "loss.paragraph_weight=0.1"],
    "norton-mean": ["loss.clip_weight=1.0", "loss.rectify_beta=0.3", "loss.paragraph_weight=0.1", "loss.fine_weight=0.0"],
    # Norton with similarities mapped by (x + 1) / 2 instead of batch min-max (see docs/benchmarks.md).
    "norton-fixed": ["loss.clip_weight=1.0", "loss.rectify_beta=0.3", "loss.paragraph_weight=0.1",
                     "loss.paragraph_norm=fixed"],
}
HIER_METHODS = {
    "flat": ["data.levels=[task]", "loss.clip_weight=1.0"],
    "hier": ["data.levels=[phase,step,task]", "loss.clip_weight=0.0", "loss.level_weights={phase: 1.0, step: 1.0, task: 1.0}",
             "loss.cross_level_weight=0.2"],
    # the same, with micro-batches filled by whole videos (in-video negatives per level, parents present)
    "hier-grouped": ["data.levels=[phase,step,task]", "loss.clip_weight=0.0",
                     "loss.level_weights={phase: 1.0, step: 1.0, task: 1.0}", "loss.cross_level_weight=0.2",
                     "data.group_by_video=true"],
}


def paragraph_stream(batch: int, k: int = 4) -> list[str]:
    """The noise benchmark's data: the narration as paragraphs of k consecutive clips, `batch` clips a step."""
    return [f"train.batch_size={batch}", "data.streams={pairs: 0.0, paragraphs: 1.0}",
            "data.paragraph_source=narration", f"data.clips_per_video={k}"]


def noise_preset(level: float):
    from videolang.data.synth import NarrationNoise

    return NarrationNoise(shift=level / 2, irrelevant=level / 2, unmatched_clips=level / 2)


def make_corpus(folder: Path, videos: int, seed: int, level: float) -> Path:
    from videolang.data.synth import synthesize_corpus

    if (folder / "manifest.jsonl").is_file():
        return folder / "manifest.jsonl"
    return synthesize_corpus(folder, videos, seed=seed, noise=noise_preset(level))


def train_and_eval(manifest: Path, out: Path, sets: list[str], seed: int, steps: int, which: tuple[str, ...]) -> dict:
    """Train one run and evaluate it; a finished run's `result.json` is reused, so a killed benchmark
    picks up where it stopped (an unfinished run folder is trained again from scratch)."""
    import shutil

    from videolang.config import load_config
    from videolang.data.manifest import load_manifest
    from videolang.eval.loading import load_eval_model
    from videolang.eval.suite import evaluate_model
    from videolang.train.trainer import Trainer

    recipe = {"manifest": str(manifest), "seed": seed, "steps": steps, "sets": [*BASE, *sets], "which": list(which)}
    done = out / "result.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved.get("recipe") == recipe:
            return saved["metrics"]
    if out.exists():
        shutil.rmtree(out)
    cfg = load_config(None, [f"data.manifest={manifest}", f"run.output_dir={out}", f"run.seed={seed}",
                             f"train.max_steps={steps}", f"train.save_every={steps}", *BASE, *sets])
    t0 = time.perf_counter()
    Trainer(cfg, resume="never").run()
    seconds = time.perf_counter() - t0
    videos = load_manifest(manifest)
    val = [v for v in videos if v.split == "val"]
    res = evaluate_model(load_eval_model(out / "final"), val, videos, out / "eval", cfg.data.num_frames, which=which)
    metrics = {
        "t2v_R@1": res.get("retrieval", {}).get("t2v", {}).get("R@1"),
        "t2v_R@5": res.get("retrieval", {}).get("t2v", {}).get("R@5"),
        "step_seg_acc": res.get("step_segmentation", {}).get("acc"),
        "step_seg_F1@25": res.get("step_segmentation", {}).get("F1@25"),
        "phase_rec_acc": res.get("recognition", {}).get("accuracy"),
        "phase_rec_F1": res.get("recognition", {}).get("macro_f1"),
        "train_seconds": round(seconds, 1),
    }
    result = {k: v for k, v in metrics.items() if v is not None}
    done.write_text(json.dumps({"recipe": recipe, "metrics": result}))
    return result


def plateau_exit(metrics_path: Path, batch: int, margin: float = 0.15) -> int | None:
    """First logged step at which the clip InfoNCE term is `margin` nats below its chance value log(batch),
    i.e. when the clip objective starts to learn; None if it never does. Recomputed from `metrics.jsonl`."""
    import math

    if not metrics_path.is_file():
        return None
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if "clip" in record and record["clip"] < math.log(batch) - margin:
            return int(record["step"])
    return None


def exit_table(results: dict) -> str:
    """Per method: the step at which the clip term left its log(batch) plateau, one entry per seed."""
    lines = ["| noise | method | clip term leaves log(batch) at step (per seed) |", "|---|---|---|"]
    for group, methods in results.items():
        for method, runs in methods.items():
            steps = ", ".join("never" if r.get("clip_plateau_exit") is None else str(r["clip_plateau_exit"]) for r in runs)
            lines.append(f"| {group} | {method} | {steps} |")
    return "\n".join(lines)


SKIP_IN_TABLE = ("train_seconds", "clip_plateau_exit")


def summarise(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if k not in SKIP_IN_TABLE]
    out = {}
    for k in keys:
        values = [r[k] for r in runs]
        out[k] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return out


def table(results: dict, metrics: list[str], rows_label: str) -> str:
    head = f"| {rows_label} | method | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 2)]
    for group, methods in results.items():
        for method, runs in methods.items():
            s = summarise(runs)
            cells = " | ".join(f"{s[m][0]:.1f} ± {s[m][1]:.1f}" for m in metrics)
            lines.append(f"| {group} | {method} | {cells} |")
    return "\n".join(lines)


def plot(results: dict, metrics: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    levels = list(results)
    methods = list(next(iter(results.values())))
    for ax, metric in zip(axes[0], metrics):
        for method in methods:
            means = [summarise(results[lv][method])[metric][0] for lv in levels]
            stds = [summarise(results[lv][method])[metric][1] for lv in levels]
            ax.errorbar([float(lv.rstrip("%")) for lv in levels], means, yerr=stds, label=method, capsize=3, marker="o")
        ax.set_xlabel("narration noise (%)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hierarchy", action="store_true", help="run the hierarchy comparison instead of the noise one")
    p.add_argument("--quick", action="store_true", help="tiny budget: checks the plumbing, not the margins")
    p.add_argument("--levels", default="0,30,60", help="narration noise levels in percent")
    p.add_argument("--methods", default=None, help="comma-separated subset of the methods")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=16, help="clips per step")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (the demo's; 5e-4 collapsed)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every method (repeatable)")
    p.add_argument("--warm-steps", type=int, default=0, metavar="N",
                   help="fine-tuning regime: every method starts from a plain-InfoNCE run of N steps on the same "
                        "corpus and seed, then trains --steps more (Norton fine-tunes a pretrained model)")
    p.add_argument("--out", default="runs/bench_noise", help="work folder (corpora, runs, results)")
    p.add_argument("--name", default=None, help="stem of the result files (default: noise / hierarchy)")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.videos, args.steps, args.levels = 1, 6, 2, "0,60"
        BASE[:2] = ["model.video_encoder=tiny", "model.text_encoder=tiny"]
        BASE[BASE.index("data.image_size=64")] = "data.image_size=32"
    BASE.append(f"train.lr={args.lr}")
    BASE.extend(args.sets)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; {args.seeds} seeds, {args.videos} videos, {args.steps} steps, lr {args.lr}")
    results: dict = {}
    if args.hierarchy:
        methods = {k: v for k, v in HIER_METHODS.items() if not args.methods or k in args.methods.split(",")}
        groups = {"default noise": None}
        which = ("recognition", "step_segmentation")
        metrics = ["phase_rec_acc", "phase_rec_F1", "step_seg_acc", "step_seg_F1@25"]
        stream = [f"train.batch_size={args.batch}", "data.streams={pairs: 1.0}"]
    else:
        methods = {k: v for k, v in NOISE_METHODS.items() if not args.methods or k in args.methods.split(",")}
        groups = {f"{lv}%": float(lv) / 100 for lv in args.levels.split(",")}
        which = ("retrieval", "step_segmentation")
        metrics = ["t2v_R@1", "t2v_R@5", "step_seg_acc", "step_seg_F1@25"]
        stream = paragraph_stream(args.batch)
    for group, level in groups.items():
        results[group] = {}
        for seed in range(args.seeds):
            corpus_level = 0.3 if level is None else level
            manifest = make_corpus(out / "corpora" / f"noise{int(100 * corpus_level)}-seed{seed}", args.videos, seed,
                                   corpus_level)
            stem = group.replace(' ', '_').rstrip('%')
            start: list[str] = []
            if args.warm_steps:  # the shared starting point of every method of this corpus and seed
                warm_dir = out / "runs" / f"{stem}-warmup{args.warm_steps}-seed{seed}"
                res = train_and_eval(manifest, warm_dir, stream + NOISE_METHODS["infonce"], seed, args.warm_steps, which)
                print(json.dumps({"group": group, "method": "warm-up (infonce)", "seed": seed, **res}), flush=True)
                start = [f"train.init_from={warm_dir}"]
                stem += f"-warm{args.warm_steps}"
            for method, sets in methods.items():
                run_dir = out / "runs" / f"{stem}-{method}-seed{seed}"
                res = train_and_eval(manifest, run_dir, stream + sets + start, seed, args.steps, which)
                if not args.hierarchy:
                    res["clip_plateau_exit"] = plateau_exit(run_dir / "metrics.jsonl", args.batch)
                results[group].setdefault(method, []).append(res)
                print(json.dumps({"group": group, "method": method, "seed": seed, **res}), flush=True)
    name = args.name or ("hierarchy" if args.hierarchy else "noise")
    (out / f"{name}.json").write_text(json.dumps(results, indent=2))
    md = table(results, metrics, "corpus" if args.hierarchy else "noise")
    if not args.hierarchy:
        md += "\n\n" + exit_table(results)
    (out / f"{name}.md").write_text(md + "\n")
    if not args.hierarchy:
        plot(results, ["t2v_R@1", "step_seg_acc"], out / f"{name}.png")
    print(md)


if __name__ == "__main__":
    main()
