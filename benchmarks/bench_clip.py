"""Our CLIP pieces against the libraries they mirror, on CPU: Procrustes (SciPy) and InfoNCE (open_clip).

    python benchmarks/bench_clip.py [--repeats 20 --threads 1 --clock cpu]

Each pair runs on the same input in one process; after a warm-up the calls alternate and the
table reports the minimum milliseconds of each (the least disturbed call on a shared CPU) and
the ratio ours / theirs, with the load average noted.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import orthogonal_procrustes

from syllabus.explain.embeddings import orthogonal_procrustes as ours_procrustes
from syllabus.nn.clip import clip_loss

CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def time_pair(ours: Callable[[], object], theirs: Callable[[], object], repeats: int, clock) -> tuple[float, float]:
    for _ in range(2):
        ours(), theirs()
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            start = clock()
            (ours, theirs)[which]()
            times[which].append((clock() - start) * 1e3)
    return min(times[0]), min(times[1])


def procrustes_pairs(n: int, d: int) -> tuple[Callable, Callable]:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    return (lambda: ours_procrustes(a, b)), (lambda: orthogonal_procrustes(a, b))


def infonce_pairs(batch: int, dim: int) -> tuple[Callable, Callable]:
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    img = F.normalize(torch.randn(batch, dim), dim=1).requires_grad_()
    txt = F.normalize(torch.randn(batch, dim), dim=1).requires_grad_()
    scale = torch.tensor(1 / 0.07)
    reference = ClipLoss()

    def ours():
        img.grad = txt.grad = None
        clip_loss(img, txt, scale).backward()

    def theirs():
        img.grad = txt.grad = None
        reference(img, txt, scale).backward()

    assert torch.allclose(clip_loss(img, txt, scale), reference(img, txt, scale), atol=1e-5)
    return ours, theirs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    scipy_name = "scipy.linalg.orthogonal_procrustes"
    cases = [("Procrustes, 4000 x 64 (quick fit pairs)", scipy_name, procrustes_pairs(4000, 64)),
             ("Procrustes, 5000 x 512 (STL-10 fit pairs)", scipy_name, procrustes_pairs(5000, 512)),
             ("InfoNCE fwd+bwd, 128 x 64 (quick batch)", "open_clip ClipLoss", infonce_pairs(128, 64)),
             ("InfoNCE fwd+bwd, 1024 x 512", "open_clip ClipLoss", infonce_pairs(1024, 512))]
    print(f"{args.threads} thread(s), min of {args.repeats} ({args.clock} clock), torch {torch.__version__}, "
          f"load average before: {os.getloadavg()[0]:.2f}\n")
    print("| case | reference | ours ms | reference ms | ratio (ours/reference) |")
    print("|---|---|---:|---:|---:|")
    for name, ref, (ours, theirs) in cases:
        t_ours, t_ref = time_pair(ours, theirs, args.repeats, CLOCKS[args.clock])
        print(f"| {name} | {ref} | {t_ours:.2f} | {t_ref:.2f} | {t_ours / t_ref:.2f} |")


if __name__ == "__main__":
    main()
