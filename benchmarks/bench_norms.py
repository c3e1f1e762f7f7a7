"""Forward + backward time of our normalisation layers against torch's built-in ones, on CPU.

    python benchmarks/bench_norms.py [--batch 64 --channels 32 --size 32 --repeats 50 --threads 2]
                                     [--stat min] [--clock cpu] [--keep-freed-memory] [--norms bn,gn] [--eager]

Each pair runs on the same input and upstream gradient in one process. After a warm-up, the
calls of ours and torch's alternate (so that load from other processes hits both alike) and
the table reports the median time of each, as a Markdown table. Training inputs of 2^20
elements or more take our `torch.compile`d path (see `syllabus.nn.norms._CompiledPath`); the
"first call" column is our first forward + backward, its compile included. `--eager` times
the hand-written eager path instead.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from syllabus.nn import norms
from syllabus.nn.norms import get_norm_layer

STATS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min}
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def timing_options(parser: argparse.ArgumentParser, repeats: int, threads: int = 2, warmup: int | None = None,
                   stat: str = "min") -> None:
    """The options every side-by-side benchmark takes: --repeats, --threads, --stat (--warmup when given)."""
    parser.add_argument("--repeats", type=int, default=repeats)
    if warmup is not None:
        parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--stat", choices=tuple(STATS), default=stat,
                        help="min: the least disturbed call, when other processes share the CPU")


def timing_setup(args: argparse.Namespace) -> str:
    """Sets torch's threads from `args`; the part of the header every benchmark prints (threads, torch,
    statistic, and the load average before timing)."""
    torch.set_num_threads(args.threads)
    return (f"{args.threads} thread(s), torch {torch.__version__}, {args.stat} of {args.repeats}, "
            f"load average before: {os.getloadavg()[0]:.2f}")


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks instead of returning them to the kernel (True if it could).

    Each forward + backward allocates fresh (B, C, H, W) tensors; whether glibc hands back
    memory it still holds or maps new pages (a page fault per 4 KiB) varies from call to call
    and, in a VM, can cost more than the arithmetic. With this, both sides time the arithmetic.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and bool(libc.mallopt(m_mmap_threshold, 1 << 30))


def reference_layers(channels: int, size: int, groups: int) -> dict[str, tuple[nn.Module, nn.Module, str]]:
    """Norm name -> (ours, torch's equivalent, the name of torch's)."""
    kw = {"num_groups": groups}
    return {
        "bn": (get_norm_layer("bn")(channels), nn.BatchNorm2d(channels), "BatchNorm2d"),
        "in": (get_norm_layer("in")(channels), nn.InstanceNorm2d(channels, affine=True),
               "InstanceNorm2d(affine=True)"),
        "ln": (get_norm_layer("ln")(channels), nn.LayerNorm([channels, size, size]), "LayerNorm([C, H, W])"),
        "gn": (get_norm_layer("gn", **kw)(channels), nn.GroupNorm(groups, channels), f"GroupNorm({groups}, C)"),
        "bin": (get_norm_layer("bin")(channels), nn.BatchNorm2d(channels), "BatchNorm2d (reference only)"),
    }


def step_fn(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of `layer` on `x` (B, C, H, W), upstream gradient `grad`."""

    def step() -> None:
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x).backward(grad)

    return step


def time_pair(ours: Callable[[], None], theirs: Callable[[], None], repeats: int, warmup: int,
              stat: Callable[[list[float]], float] = statistics.median,
              clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """`stat` (median) of the milliseconds per call of each, the calls alternating; `clock` in seconds."""
    for _ in range(warmup):
        ours()
        theirs()
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for which in order:
            fn = (ours, theirs)[which]
            start = clock()
            fn()
            times[which].append((clock() - start) * 1e3)
    return stat(times[0]), stat(times[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--size", type=int, default=32, help="height = width")
    parser.add_argument("--groups", type=int, default=8, help="groups of gn")
    timing_options(parser, repeats=50, warmup=5, stat="median")
    parser.add_argument("--norms", default="bn,in,ln,gn,bin", help="comma-separated subset")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this thread's CPU time (with --threads 1), blind to time spent waiting for a core")
    parser.add_argument("--eager", action="store_true", help="our hand-written eager path, never compiled")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc: reuse freed memory rather than fault in new pages (see keep_freed_memory)")
    args = parser.parse_args(argv)
    kept = args.keep_freed_memory and keep_freed_memory()
    norms._COMPILED.enabled = not args.eager
    norms.MIN_COMPILED_NUMEL = 0  # the compiled path at any size (training uses it from 8M elements on)

    header = timing_setup(args)
    torch.manual_seed(0)
    shape = (args.batch, args.channels, args.size, args.size)
    x = torch.randn(shape).mul_(2).add_(0.5).requires_grad_()  # (B, C, H, W)
    grad = torch.randn(shape)  # (B, C, H, W)
    layers = reference_layers(args.channels, args.size, args.groups)
    print(f"input {tuple(shape)} float32, forward + backward, {args.clock} clock, freed memory kept: {kept}, "
          f"ours: {'eager' if args.eager else 'compiled'}, {header}\n")
    print("| norm | ours ms | torch ms | ratio (ours/torch) | first call s | torch layer |")
    print("|---|---:|---:|---:|---:|---|")
    for name in args.norms.split(","):
        ours, theirs, label = layers[name]
        step = step_fn(ours.train(), x, grad)
        start = time.perf_counter()
        step()
        first = time.perf_counter() - start
        t_ours, t_torch = time_pair(step, step_fn(theirs.train(), x, grad), args.repeats, args.warmup,
                                    STATS[args.stat], CLOCKS[args.clock])
        print(f"| {name} | {t_ours:.2f} | {t_torch:.2f} | {t_ours / t_torch:.2f} | {first:.1f} | {label} |")
    if norms._COMPILED.failure:
        print(f"\ncompilation failed, ours ran eagerly: {norms._COMPILED.failure}")


if __name__ == "__main__":
    main()
