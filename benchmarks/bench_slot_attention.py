"""Our SlotAttention module against the `slot-attention` package on PyPI, at the same sizes, on CPU.

    python benchmarks/bench_slot_attention.py [--batch 32 --tokens 1024 --dim 64 --slots 7 --iters 3]
                                              [--repeats 20 --threads 2 --stat min]

Both modules take the same (B, N, D) inputs and run the same algorithm (LayerNorm on the
inputs, learned-Gaussian slot initialisation, T iterations of softmax-over-slots attention,
weighted mean, GRU and residual MLP of the same width); theirs (lucidrains) has biases on
q/k/v, ours does not. Forward alone (no_grad) and forward + backward, calls alternating
after a warm-up (`time_pair` of bench_norms.py).
"""

from __future__ import annotations

import argparse

import torch
from bench_norms import STATS, time_pair, timing_options, timing_setup
from slot_attention import SlotAttention as ReferenceSlotAttention

from syllabus.nn.slot_attention import SlotAttention


def forward_fn(module: torch.nn.Module, x: torch.Tensor):
    def run() -> None:
        with torch.no_grad():
            module(x)
    return run


def train_fn(module: torch.nn.Module, x: torch.Tensor, pick):
    def run() -> None:
        module.zero_grad(set_to_none=True)
        pick(module(x)).square().mean().backward()
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=1024, help="N, e.g. a 32x32 feature grid")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--slots", type=int, default=7)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=128)
    timing_options(parser, repeats=20, warmup=3)
    args = parser.parse_args(argv)
    header = timing_setup(args)
    torch.manual_seed(0)
    ours = SlotAttention(args.slots, args.dim, args.iters, args.hidden)
    theirs = ReferenceSlotAttention(args.slots, args.dim, args.iters, hidden_dim=args.hidden)
    x = torch.randn(args.batch, args.tokens, args.dim)  # (B, N, D)
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))
    print(f"inputs {(args.batch, args.tokens, args.dim)}, K={args.slots}, T={args.iters}, hidden {args.hidden}, "
          f"parameters {n_ours} (ours) / {n_theirs} (theirs), {header}\n")
    print("| pass | ours ms | slot-attention (PyPI) ms | ratio (ours/theirs) |")
    print("|---|---:|---:|---:|")
    stat = STATS[args.stat]
    pairs = {
        "forward": (forward_fn(ours, x), forward_fn(theirs, x)),
        "forward + backward": (train_fn(ours, x, lambda out: out[0]), train_fn(theirs, x, lambda out: out)),
    }
    for name, (a, b) in pairs.items():
        t_ours, t_theirs = time_pair(a, b, args.repeats, args.warmup, stat)
        print(f"| {name} | {t_ours:.2f} | {t_theirs:.2f} | {t_ours / t_theirs:.2f} |")


if __name__ == "__main__":
    main()
