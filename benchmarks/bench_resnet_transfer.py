"""Stage features and CKA of resnet-transfer against the library ways of doing the same, on CPU.

    python benchmarks/bench_resnet_transfer.py [--batch 64 --size 32 --n 500 --repeats 10 --threads 2]

1. Every stage's pooled output of a torchvision ResNet-50 (random weights) in one forward pass:
   our forward hooks (`syllabus.explain.features.StageFeatures`) against torchvision's FX
   `create_feature_extractor` (outputs checked equal first).
2. The linear-CKA matrix between the five levels' features of `--n` examples: ours (each
   centred Gram formed once, `syllabus.metrics.cka.cka_matrix`) against the HSIC formula as
   written, tr(K H L H) / (n-1)^2 with an explicit centring matrix, pair by pair.
Calls alternate after a warm-up (see bench_norms.time_pair); the table gives `--stat` milliseconds.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from bench_norms import STATS, time_pair, timing_options, timing_setup
from torchvision.models import resnet50
from torchvision.models.feature_extraction import create_feature_extractor

from syllabus.explain.features import StageFeatures
from syllabus.metrics.cka import cka_matrix

NODES = {"maxpool": "stem", "layer1": "stage1", "layer2": "stage2", "layer3": "stage3", "layer4": "stage4"}


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019 eq. 3-4, as written."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, lk = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h) / (n - 1) ** 2
    return hsic(k, lk) / np.sqrt(hsic(k, k) * hsic(lk, lk))


def bench_features(batch: int, size: int, repeats: int, stat) -> tuple[float, float]:
    model = resnet50().eval()
    x = torch.randn(batch, 3, size, size)
    extractor = create_feature_extractor(model, NODES)

    @torch.no_grad()
    def ours() -> dict:
        with StageFeatures(model, pool=1) as hooks:
            model(x)
        return hooks.outputs

    @torch.no_grad()
    def theirs() -> dict:
        return {k: F.adaptive_avg_pool2d(v, 1).flatten(1) for k, v in extractor(x).items()}

    a, b = ours(), theirs()
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    return time_pair(ours, theirs, repeats, 2, stat)


def bench_cka(n: int, repeats: int, stat) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(n, d)) for d in (64, 256, 512, 1024, 2048)]

    def ours() -> np.ndarray:
        return cka_matrix(feats)

    def theirs() -> np.ndarray:
        return np.array([[hsic_cka(a, b) for b in feats] for a in feats])

    np.testing.assert_allclose(ours(), theirs(), rtol=1e-8)
    return time_pair(ours, theirs, repeats, 1, stat)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n", type=int, default=500, help="examples for CKA")
    timing_options(parser, repeats=10)
    args = parser.parse_args(argv)
    print(f"{timing_setup(args)}\n")
    print("| what | ours ms | reference ms | ratio (ours/reference) | reference |")
    print("|---|---:|---:|---:|---|")
    t_ours, t_ref = bench_features(args.batch, args.size, args.repeats, STATS[args.stat])
    print(f"| 5 levels of ResNet-50, batch {args.batch} at {args.size}px | {t_ours:.1f} | {t_ref:.1f} | "
          f"{t_ours / t_ref:.2f} | torchvision create_feature_extractor |")
    t_ours, t_ref = bench_cka(args.n, args.repeats, STATS[args.stat])
    print(f"| CKA matrix, 5 levels x {args.n} examples | {t_ours:.1f} | {t_ref:.1f} | {t_ours / t_ref:.2f} | "
          "HSIC formula pair by pair |")


if __name__ == "__main__":
    main()
