"""Forward time of our ViT against transformers' ViT carrying the same weights, on CPU.

    python benchmarks/bench_vit.py [--batch 128 --size 32 --patch 4 --dim 64 --depth 4 --heads 4
                                    --repeats 20 --threads 2]

Both models compute the same logits (tests/test_vit.py copies our weights into a
`ViTForImageClassification` and compares logits, attentions and hidden states). Two settings:
plain inference (ours fused through `scaled_dot_product_attention`, theirs `attn_implementation=
"sdpa"`) and inference that returns every block's attention weights (ours unfused, theirs
`"eager"` with `output_attentions=True`), plus attention rollout over those weights. Calls
alternate after a warm-up; the table gives the `--stat` (min) of milliseconds per batch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_norms import STATS, keep_freed_memory, time_pair, timing_options, timing_setup  # noqa: E402
from test_vit import hf_copy  # noqa: E402

from syllabus.explain.attention import rollout  # noqa: E402
from syllabus.nn.vit import ViT  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("batch", 128), ("size", 32), ("patch", 4), ("dim", 64), ("depth", 4), ("heads", 4)):
        parser.add_argument(f"--{name}", type=int, default=default)
    timing_options(parser, repeats=20, warmup=3)
    args = parser.parse_args(argv)
    kept = keep_freed_memory()
    header = timing_setup(args)
    torch.manual_seed(0)
    ours = ViT(10, args.size, args.patch, dim=args.dim, depth=args.depth, heads=args.heads).eval()
    eager = hf_copy(ours)
    sdpa = hf_copy(ours)
    sdpa.set_attn_implementation("sdpa")
    x = torch.randn(args.batch, 3, args.size, args.size)  # (B, 3, S, S)
    stat = STATS[args.stat]

    @torch.no_grad()
    def ours_weights() -> None:
        rollout(ours.forward_features(x, attentions=True).attentions)

    @torch.no_grad()
    def eager_weights() -> None:
        rollout(eager(pixel_values=x, output_attentions=True).attentions)

    pairs = {
        "logits (fused / sdpa)": (torch.no_grad()(lambda: ours(x)), torch.no_grad()(lambda: sdpa(pixel_values=x))),
        "logits + attention weights + rollout (unfused / eager)": (ours_weights, eager_weights),
    }
    tokens = 1 + (args.size // args.patch) ** 2
    print(f"ViT dim {args.dim}, depth {args.depth}, heads {args.heads}, {tokens} tokens, input {tuple(x.shape)}, "
          f"freed memory kept: {kept}, {header}\n")
    print("| call | ours ms | transformers ms | ratio (ours/theirs) |")
    print("|---|---:|---:|---:|")
    for name, (a, b) in pairs.items():
        t_ours, t_theirs = time_pair(a, b, args.repeats, args.warmup, stat)
        print(f"| {name} | {t_ours:.1f} | {t_theirs:.1f} | {t_ours / t_theirs:.2f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
