"""Benchmark `retrieval_metrics_from_embeddings` against a dense N x N + argsort ranking and exact FAISS.

For each N (queries = candidates = N, match of query i = candidate i) and each method, it reports wall and
CPU time, the peak memory the call adds on top of the inputs (resident-set size sampled every few ms in
a thread, so allocations made by C++ libraries count too), and the metrics it produced, which must agree.

- `chunked`: videolang's blocked ranking (all metrics: R@1/5/10, MdR, MnR).
- `dense`: the CLIP4Clip / MMPT approach: full N x N scores, argsort of each row, position of the match.
  Skipped above `--dense-max` (its memory grows as ~12 N^2 bytes).
- `faiss`: exact inner-product search (`IndexFlatIP`, top-10), the usual tool for large-scale retrieval;
  it yields R@1/5/10 only (MdR/MnR would need the full ranking). Building the index is not timed.
  Skipped with a message when `faiss` is not installed (`pip install faiss-cpu`).

Methods run interleaved, `--repeats` times, and the table shows the fastest run: on a shared machine that
is the least disturbed one, and ratios within one run are more telling than absolute times.

    python tools/bench_retrieval.py --quick
    python tools/bench_retrieval.py --sizes 1000,10000,100000 --repeats 2
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from videolang.eval import retrieval_metrics_from_embeddings, summarize_ranks
from bench_common import cpu_name

RECALL_AT = (1, 5, 10)


@dataclass
class Result:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_mb: list[Optional[float]] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


class PeakRss:
    """Peak resident-set size above the level at entry, sampled in a background thread.

    Reads /proc/self/statm, so it needs Linux; elsewhere `extra_mb` is None.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.available = os.path.exists("/proc/self/statm")
        self.page = os.sysconf("SC_PAGE_SIZE") if self.available else 0
        self.base = self.peak = 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self) -> "PeakRss":
        if self.available:
            self.base = self.peak = self._rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc) -> None:
        if self.available:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())

    @property
    def extra_mb(self) -> Optional[float]:
        return (self.peak - self.base) / 2**20 if self.available else None


def make_embeddings(n: int, dim: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm queries and candidates; candidate i is a noisy copy of query i, so ranks are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    queries = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    candidates = queries + noise * torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    return queries, torch.nn.functional.normalize(candidates, dim=1)


def run_chunked(q: torch.Tensor, c: torch.Tensor, chunk_size: int) -> dict:
    return retrieval_metrics_from_embeddings(q, c, chunk_size=chunk_size)


def run_dense(q: torch.Tensor, c: torch.Tensor) -> dict:
    sim = q @ c.T
    order = torch.argsort(sim, dim=1, descending=True)
    ranks = (order == torch.arange(q.shape[0])[:, None]).nonzero()[:, 1] + 1
    return summarize_ranks(ranks)


def faiss_runner(c: torch.Tensor, threads: int) -> Optional[Callable[[torch.Tensor], dict]]:
    try:
        import faiss  # optional: only this benchmark uses it
    except ImportError:
        return None
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c.numpy())

    def search(q: torch.Tensor) -> dict:
        _, ids = index.search(q.numpy(), max(RECALL_AT))
        hit = torch.from_numpy(ids) == torch.arange(q.shape[0])[:, None]
        return {f"R@{r}": 100.0 * hit[:, :r].any(1).double().mean().item() for r in RECALL_AT}

    return search


def measure(fn: Callable[[], dict], result: Result) -> None:
    gc.collect()
    with PeakRss() as rss:
        wall, cpu = time.perf_counter(), time.process_time()
        result.metrics = fn()
        result.wall.append(time.perf_counter() - wall)
        result.cpu.append(time.process_time() - cpu)
    result.peak_mb.append(rss.extra_mb)


def fmt(value: Optional[float], digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated N (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per method and size; the table shows the fastest time"
        " and the largest memory"
    )
    parser.add_argument("--chunk-size", type=int, default=4096, help="block edge of the chunked ranking")
    parser.add_argument("--dense-max", type=int, default=20000, help="largest N for the dense baseline")
    parser.add_argument("--noise", type=float, default=6.0, help="norm of the noise added to each match")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N = 1000, 4000 and one run: a smoke test")
    args = parser.parse_args(argv)
    sizes = [1000, 4000] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)

    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"machine: {os.cpu_count()}-core CPU, {cpu_name()}, torch {torch.__version__}, {args.threads} threads")
    print()
    print("| N | method | wall s | CPU s | wall / FAISS | peak extra MB | R@1 | R@5 | R@10 | MdR | MnR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    warm_q, warm_c = make_embeddings(512, args.dim, args.noise, args.seed)
    run_chunked(warm_q, warm_c, args.chunk_size)  # first calls pay one-off set-up: keep it out of the table
    run_dense(warm_q, warm_c)
    for n in sizes:
        q, c = make_embeddings(n, args.dim, args.noise, args.seed)
        methods: dict[str, Callable[[], dict]] = {"chunked": lambda: run_chunked(q, c, args.chunk_size)}
        if n <= args.dense_max:
            methods["dense"] = lambda: run_dense(q, c)
        search = faiss_runner(c, args.threads)
        if search is not None:
            methods["faiss"] = lambda: search(q)
        results = {name: Result() for name in methods}
        for _ in range(repeats):
            for name, fn in methods.items():
                measure(fn, results[name])
        faiss_wall = min(results["faiss"].wall) if "faiss" in results else None
        for name, r in results.items():
            m = r.metrics
            ratio = min(r.wall) / faiss_wall if faiss_wall else None
            peak = None if None in r.peak_mb else max(r.peak_mb)
            row = [str(n), name, fmt(min(r.wall)), fmt(min(r.cpu)), fmt(ratio), fmt(peak, 0)]
            row += [fmt(m.get(f"R@{k}")) for k in RECALL_AT] + [fmt(m.get("MdR"), 1), fmt(m.get("MnR"), 1)]
            print("| " + " | ".join(row) + " |", flush=True)
        reference = results["chunked"].metrics
        # The methods compute their scores with different kernels (blocks, one N x N product, FAISS's own),
        # which round differently: a near-tie may flip. Allow a few queries (0.05 %, at least 2) to move
        # by one position; anything more is a real disagreement.
        flips = max(2, n // 2000)
        slack = {f"R@{k}": 100.0 * flips / n for k in RECALL_AT} | {"MdR": 0.5, "MnR": flips / n}
        for name, r in results.items():
            if any(abs(r.metrics[key] - reference[key]) > slack[key] + 1e-9 for key in r.metrics if key in slack):
                notes.append(f"WARNING: N={n}: {name} disagrees with chunked: {r.metrics} vs {reference}")
        if n > args.dense_max:
            notes.append(f"N={n}: dense skipped (it would need ~{13 * n * n / 2**30:.0f} GiB; see --dense-max)")
        if search is None:
            notes.append(f"N={n}: faiss skipped: not installed (`pip install faiss-cpu`)")
        del q, c, methods, search
    print()
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
