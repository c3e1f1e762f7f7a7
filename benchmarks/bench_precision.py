"""A training step in bfloat16 autocast against the same step in fp32, for the quick models.

    python benchmarks/bench_precision.py [--repeats 10 --threads 1 --stat min]

`train.precision=auto` turns on bfloat16 autocast (through Accelerate) where the CPU computes
it natively (AMX or AVX512-BF16; `syllabus.train.native_bf16`). This times one optimiser step
(forward, loss, backward, Adam) of each quick model on one quick batch, with and without
`torch.autocast("cpu", torch.bfloat16)`, the calls alternating (`time_pair` of bench_norms.py).
The experiments' quicks are built from their own configs: math-programs' GloVe + attention
LSTM on 64 real COL775 problems, slot-attention's autoencoder on a batch of 16 scenes at 64 px,
slot-diffusion's slot encoder + UNet on 16 latents of 16 x 16.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F
from bench_norms import STATS, time_pair, timing_options, timing_setup

from syllabus.experiments import get_experiment
from syllabus.train import native_bf16


def step_fn(model: torch.nn.Module, loss_of, bf16: bool):
    """One Adam step of `model` on `loss_of(model)`, under bfloat16 autocast if `bf16`."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = loss_of(model)
        loss.backward()
        opt.step()
    return run


def slot_attention_case():
    exp = get_experiment("slot-attention")
    cfg = exp.config("quick")
    size = cfg.data.image_size
    x = torch.rand(cfg.train.batch_size, 3, size, size) * 2 - 1  # (B, 3, H, W) in [-1, 1]
    return exp.build_model, cfg, lambda m: F.mse_loss(m(x)["recon"], x)


def slot_diffusion_case():
    exp = get_experiment("slot-diffusion")
    cfg = exp.config("quick")
    b, size = cfg.train.batch_size, cfg.data.image_size
    images = torch.rand(b, 3, size, size)  # (B, 3, H, W) in [0, 1]
    hw = size // 4
    z0, noise = torch.randn(b, 3, hw, hw), torch.randn(b, 3, hw, hw)  # (B, 3, h, w) latents
    t = torch.randint(0, cfg.model.timesteps, (b,))

    def loss(m):
        slots, _ = m.slots(images)
        return F.mse_loss(m.unet(0.6 * z0 + 0.8 * noise, t, slots), noise)
    return exp.build_model, cfg, loss


def math_programs_case():
    from syllabus.data import mathqa
    from syllabus.programs.decode import featurize
    from syllabus.programs.training import collate, sequence_loss
    from syllabus.programs.vocab import ProgramVocab

    exp = get_experiment("math-programs")
    cfg = exp.config("quick")  # glove-attn
    recs = mathqa.splits(cfg.data)[0]["train"][:cfg.train.batch_size]
    vocab = ProgramVocab()

    def build(cfg):
        model = exp.build_model(cfg, {"n_words": 10_000, "word_dim": 50})
        model.items = featurize(model, vocab, [r.problem for r in recs], [r.program for r in recs])
        return model

    def loss(m):
        batch = collate(m.items, vocab.pad)
        return sequence_loss(m(batch, batch["tgt"], 1.0), batch["tgt"], vocab.pad)  # full teacher forcing
    return build, cfg, loss


CASES = {"math-programs quick (glove-attn, 64 COL775 problems)": math_programs_case,
         "slot-attention quick (batch 16, 64 px)": slot_attention_case,
         "slot-diffusion quick (batch 16, 16 x 16 latents)": slot_diffusion_case}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    timing_options(parser, repeats=10, threads=1, warmup=2)
    args = parser.parse_args(argv)
    print(f"native bfloat16 on this CPU: {native_bf16('cpu')}, {timing_setup(args)}\n")
    print("| training step | bfloat16 ms | fp32 ms | ratio (bf16/fp32) |")
    print("|---|---:|---:|---:|")
    for name, case in CASES.items():
        build, cfg, loss_of = case()
        torch.manual_seed(0)
        bf16_model, fp32_model = build(cfg), build(cfg)
        fp32_model.load_state_dict(bf16_model.state_dict())
        t_bf16, t_fp32 = time_pair(step_fn(bf16_model, loss_of, True), step_fn(fp32_model, loss_of, False),
                                   args.repeats, args.warmup, STATS[args.stat])
        print(f"| {name} | {t_bf16:.1f} | {t_fp32:.1f} | {t_bf16 / t_fp32:.2f} |")


if __name__ == "__main__":
    main()
