"""Batched beam search against a per-example loop: the same model, problems, beam size and search.

    python benchmarks/bench_beam.py [--batch 64 --beam 10 --max-len 40 --hidden 128 --repeats 3 --threads 2]

Both call `syllabus.nn.beam.beam_search` with the same `math-programs` model (GloVe + BiLSTM ->
attention LSTM, random weights, so every hypothesis runs to `--max-len`): once with all B
problems and k beams as B * k rows, once per problem (k rows at a time). The results are
checked equal, the two alternate, and the table shows the minimum seconds of each (the least
disturbed call when other processes share the CPU) and their ratio.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from syllabus.data import mathqa
from syllabus.nn.beam import beam_search
from syllabus.nn.seq2seq import GloveEncoder, LSTMDecoder, Seq2Seq, collate
from syllabus.programs.decode import featurize
from syllabus.programs.inputs import build_words
from syllabus.programs.vocab import ProgramVocab


def make_model(hidden: int, problems: list[str], vocab: ProgramVocab) -> Seq2Seq:
    words = build_words(problems)
    encoder = GloveEncoder(words, torch.randn(len(words), 50), hidden=hidden)
    decoder = LSTMDecoder(len(vocab), hidden, 64, attention=True, copy_from=vocab.index["n0"])
    return Seq2Seq(encoder, decoder, vocab.bos, vocab.eos, vocab.pad).eval()


@torch.no_grad()
def search(model: Seq2Seq, vocab: ProgramVocab, items: list[dict], k: int, max_len: int) -> torch.Tensor:
    """(B, k) beam scores of the items, searched as one batch."""
    batch = collate(items, vocab.pad)
    fixed, state = model.start(batch)
    beams = beam_search(model.step, fixed, state, k=k, max_len=max_len, bos=vocab.bos, eos=vocab.eos, pad=vocab.pad)
    return beams.scores


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--max-len", type=int, default=40)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = ProgramVocab()
    problems = [r.problem for r in mathqa.shipped("dev")[:args.batch]]
    model = make_model(args.hidden, problems, vocab)
    items = featurize(model, vocab, problems)
    batched = lambda: search(model, vocab, items, args.beam, args.max_len)
    looped = lambda: [search(model, vocab, [it], args.beam, args.max_len) for it in items]
    one, many = batched(), looped()  # warm-up, and the check that both find the same beams
    for i, alone in enumerate(many):  # padding changes float rounding: exact ties may swap, scores agree
        torch.testing.assert_close(one[i], alone[0], atol=1e-3, rtol=0, msg=f"problem {i}: beams differ")
    times: dict[str, list[float]] = {"batched": [], "loop": []}
    for r in range(args.repeats):
        for name in (("batched", "loop") if r % 2 == 0 else ("loop", "batched")):
            start = time.perf_counter()
            (batched if name == "batched" else looped)()
            times[name].append(time.perf_counter() - start)
    b, lp = min(times["batched"]), min(times["loop"])
    print(f"B={args.batch} problems, beam {args.beam}, {args.max_len} steps, hidden {args.hidden}, "
          f"{args.threads} threads, torch {torch.__version__}, min of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.1f}; beam scores equal to 1e-3: yes\n")
    print("| search | seconds | problems / s |")
    print("|---|---:|---:|")
    print(f"| batched (B x k rows) | {b:.3f} | {args.batch / b:.1f} |")
    print(f"| per-example loop (k rows) | {lp:.3f} | {args.batch / lp:.1f} |")
    print(f"\nspeed-up of batching: {lp / b:.1f}x")


if __name__ == "__main__":
    main()
