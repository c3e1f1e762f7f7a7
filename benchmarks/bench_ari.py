"""Our batched ARI / FG-ARI against a loop of scikit-learn's adjusted_rand_score, on CPU.

    python benchmarks/bench_ari.py [--n 1000 --size 64 --segments 7 --repeats 5 --threads 2]

Both score the same N pairs of (size x size) segmentations: ground truth of random
rectangles over a background, predictions that keep 80% of the pixels and relabel the rest.
They agree to 1e-10 (checked here and in tests/test_ari.py). Times are the minimum over
repeats (the least disturbed run when other jobs share the CPU); the ratio is the result.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from syllabus.metrics.ari import adjusted_rand_index


def masks(n: int, size: int, segments: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth (N, S, S) of up to ``segments - 1`` rectangles, and a noisy prediction."""
    rng = np.random.default_rng(seed)
    true = np.zeros((n, size, size), np.int64)
    for i in range(n):
        for k in range(1, segments):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(4, size // 3, 2)
            true[i, y: y + h, x: x + w] = k
    pred = np.where(rng.random(true.shape) < 0.8, true, rng.integers(0, segments, true.shape))
    return true, pred


def sklearn_loop(true: np.ndarray, pred: np.ndarray, foreground: bool) -> np.ndarray:
    out = np.empty(len(true))
    for i, (t, p) in enumerate(zip(true.reshape(len(true), -1), pred.reshape(len(pred), -1), strict=True)):
        keep = t != 0 if foreground else slice(None)
        out[i] = adjusted_rand_score(t[keep], p[keep])
    return out


def best_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--segments", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    true, pred = masks(args.n, args.size, args.segments)
    t_true, t_pred = torch.from_numpy(true), torch.from_numpy(pred)
    print(f"{args.n} masks {args.size}x{args.size}, {args.segments} true segments, {args.threads} threads, "
          f"torch {torch.__version__}, min of {args.repeats}, load average before: {os.getloadavg()[0]:.2f}\n")
    print("| score | ours ms | scikit-learn loop ms | speed-up (sklearn/ours) | max abs difference |")
    print("|---|---:|---:|---:|---:|")
    for name, foreground in (("ARI", False), ("FG-ARI", True)):
        adjusted_rand_index(t_true[:8], t_pred[:8], foreground)  # warm-up
        t_ours, ours = best_time(lambda f=foreground: adjusted_rand_index(t_true, t_pred, f), args.repeats)
        t_ref, ref = best_time(lambda f=foreground: sklearn_loop(true, pred, f), max(1, args.repeats // 2))
        diff = float(np.abs(ours.numpy() - ref).max())
        print(f"| {name} | {t_ours * 1e3:.1f} | {t_ref * 1e3:.1f} | {t_ref / t_ours:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
