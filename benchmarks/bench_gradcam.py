"""Time of our Grad-CAM against pytorch-grad-cam's on the same model, layers and batch, on CPU.

    python benchmarks/bench_gradcam.py [--batch 64 --size 64 --n 2 --repeats 20 --threads 2]

Both explain the same (B, 3, S, S) batch for the same classes and return (B, S, S) maps
normalised to [0, 1] (they agree to 1e-4, see tests/test_gradcam.py). The model is the
`resnet-norms` ResNet (6n+2 layers, our batch normalisation) in eval mode; the layer sets
are the last stage's 2n convolutions (the experiment's default), its last convolution alone,
and the last convolutions of the second and third stages (two resolutions, each map resized
to the input before averaging). Each call registers and removes its hooks (a negligible cost, the same for both). Calls
alternate after a warm-up; the table gives median milliseconds per batch.
"""

from __future__ import annotations

import argparse
import os

import torch
from bench_norms import keep_freed_memory, time_pair
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from syllabus.explain.gradcam import GradCAM, last_stage_convs
from syllabus.nn.norms import get_norm_layer
from syllabus.nn.resnet import ResNet


def compare(model: torch.nn.Module, layers: list[str], x: torch.Tensor, targets: torch.Tensor, repeats: int,
            warmup: int) -> tuple[float, float]:
    """Median ms of ours and of pytorch-grad-cam's Grad-CAM on the same call. Each call sets up and
    removes its own hooks, so neither library's hooks run during the other's call."""
    modules = dict(model.named_modules())
    ref_targets = [ClassifierOutputTarget(int(t)) for t in targets]

    def ours() -> None:
        with GradCAM(model, layers) as cam:
            cam(x, targets)

    def theirs() -> None:
        with ReferenceGradCAM(model, [modules[n] for n in layers]) as cam:
            cam(x, ref_targets)

    return time_pair(ours, theirs, repeats, warmup)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="input height = width")
    parser.add_argument("--n", type=int, default=2, help="blocks per stage (depth 6n+2)")
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    kept = keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResNet(args.classes, n=args.n, norm_layer=get_norm_layer("bn")).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)  # (B, 3, S, S)
    targets = torch.randint(0, args.classes, (args.batch,))  # (B,)
    print(f"ResNet-{6 * args.n + 2}, input {tuple(x.shape)}, {args.threads} threads, torch {torch.__version__}, "
          f"median of {args.repeats}, freed memory kept: {kept}, load average before: {os.getloadavg()[0]:.2f}\n")
    print("| layers | ours ms | pytorch-grad-cam ms | ratio (ours/theirs) |")
    print("|---|---:|---:|---:|")
    last = last_stage_convs(model)
    mixed = [f"stages.1.{args.n - 1}.conv2", last[-1]]  # 1/2 and 1/4 of the input resolution
    for layers in (last, last[-1:], mixed):
        t_ours, t_theirs = compare(model, layers, x, targets, args.repeats, args.warmup)
        print(f"| {', '.join(layers)} | {t_ours:.1f} | {t_theirs:.1f} | {t_ours / t_theirs:.2f} |")


if __name__ == "__main__":
    main()
