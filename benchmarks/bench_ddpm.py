"""Our DDPM / DDIM sampling loop against diffusers' scheduler loop, same UNet, same noise, on CPU.

    python benchmarks/bench_ddpm.py [--batch 4 --side 16 --steps 1000 --ddim-steps 50 --repeats 3 --threads 1]

Both loops start from the same x_T, call the same slot-conditioned UNet (ours, small) and
draw the per-step noise from generators with the same seed, so the samples must agree; the
table gives the largest absolute difference and the largest |sample|. Times are the min over
repeats, the runs of the two alternating.

An untrained UNet predicts noise near 0, and x0_hat = x_t / sqrt(abar_t) would then grow
to hundreds, which no trained model produces. So the noise predicted is the UNet's output
(scaled by 0.1) plus the exact noise of Gaussian data N(0, I / 4),
eps*(x_t, t) = sqrt(1 - abar_t) x_t / (abar_t / 4 + 1 - abar_t), which keeps the samples at
data scale as a trained model would. A second pair of rows uses that formula alone, so that
only the schedulers' own per-step work is timed.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import diffusers
import torch

from syllabus.nn.diffusion import DDIMScheduler, DDPMScheduler, Scheduler, sample_loop
from syllabus.nn.unet import UNet

KW = {"num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0195, "beta_schedule": "linear"}


def diffusers_loop(eps_model: Callable, scheduler, x_T: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The loop of diffusers' pipelines: model, then `scheduler.step(...).prev_sample`."""
    x = x_T
    for t in scheduler.timesteps:
        x = scheduler.step(eps_model(x, t.expand(len(x))), t, x, generator=generator).prev_sample
    return x


def ours_loop(eps_model: Callable, scheduler: Scheduler, x_T: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return sample_loop(eps_model, scheduler, x_T, generator=generator)[0]


def time_both(eps_model: Callable, ours: Scheduler, theirs, x_T: torch.Tensor, repeats: int) -> tuple[float, ...]:
    """(ours s, diffusers s, max |difference| of the samples, max |sample|), min over alternating repeats."""
    times: tuple[list[float], list[float]] = ([], [])
    outs: list[torch.Tensor] = [x_T, x_T]
    for i in range(repeats):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            loop, sched = ((ours_loop, ours), (diffusers_loop, theirs))[which]
            start = time.perf_counter()
            with torch.no_grad():
                outs[which] = loop(eps_model, sched, x_T, torch.Generator().manual_seed(1))
            times[which].append(time.perf_counter() - start)
    return min(times[0]), min(times[1]), float((outs[0] - outs[1]).abs().max()), float(outs[1].abs().max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--side", type=int, default=16, help="latent side (3 channels)")
    parser.add_argument("--channels", default="32,64", help="UNet widths per level")
    parser.add_argument("--steps", type=int, default=1000, help="DDPM sampling steps")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1: least disturbed on a shared CPU")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = UNet(channels=[int(c) for c in args.channels.split(",")], context_dim=64).eval()
    for p in (unet.conv_out.weight, unet.conv_out.bias):  # a non-trivial output, as after training
        torch.nn.init.normal_(p, std=0.02)
    slots = torch.randn(args.batch, 6, 64)
    x_T = torch.randn(args.batch, 3, args.side, args.side, generator=torch.Generator().manual_seed(0))

    abar = DDPMScheduler(**KW).alphas_cumprod  # (T,)

    def free_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # E[eps | x_t] for x0 ~ N(0, I / 4)
        a = abar[t].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * x / (a * 0.25 + 1 - a)

    def unet_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return free_eps(x, t) + 0.1 * unet(x, t, slots)

    cases = []
    for name, model in (("UNet", unet_eps), ("no network", free_eps)):
        ddpm, ref = DDPMScheduler(**KW), diffusers.DDPMScheduler(clip_sample=False, **KW)
        ddpm.set_timesteps(args.steps)
        ref.set_timesteps(args.steps)
        cases.append((f"DDPM {args.steps} steps, {name}", model, ddpm, ref))
        ddim, ref = DDIMScheduler(**KW), diffusers.DDIMScheduler(clip_sample=False, **KW)
        ddim.set_timesteps(args.ddim_steps)
        ref.set_timesteps(args.ddim_steps)
        cases.append((f"DDIM {args.ddim_steps} steps, {name}", model, ddim, ref))

    print(f"x_T {(args.batch, 3, args.side, args.side)}, UNet {args.channels} "
          f"({sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters), {args.threads} threads, "
          f"torch {torch.__version__}, diffusers {diffusers.__version__}, min of {args.repeats}, "
          f"load average before: {os.getloadavg()[0]:.2f}\n", flush=True)
    print("| loop | ours s | diffusers s | ratio (ours/diffusers) | max abs diff | max abs sample |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, model, ours, theirs in cases:
        t_ours, t_ref, diff, scale = time_both(model, ours, theirs, x_T, args.repeats)
        print(f"| {label} | {t_ours:.3f} | {t_ref:.3f} | {t_ours / t_ref:.2f} | {diff:.1e} | {scale:.2f} |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
