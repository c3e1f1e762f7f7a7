"""Problems -> predicted program texts with a trained `Seq2Seq`: batches, beam search, grammar."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from syllabus.nn.beam import beam_search
from syllabus.nn.seq2seq import Seq2Seq, collate
from syllabus.programs.grammar import ProgramGrammar
from syllabus.programs.language import extract_numbers
from syllabus.programs.vocab import ProgramVocab


def featurize(model: Seq2Seq, vocab: ProgramVocab, problems: Sequence[str],
              programs: Sequence[str] | None = None) -> list[dict]:
    """Encoder inputs of each problem (and target ids of each program), with its index."""
    items = []
    for i, problem in enumerate(problems):
        item = {**model.encoder.featurize(problem), "n_numbers": len(extract_numbers(problem)), "index": i}
        if programs is not None:
            item["tgt"] = vocab.encode(programs[i])
        items.append(item)
    return items


def length_batches(items: Sequence[dict], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar input length (less padding), in a fixed order."""
    order = sorted(range(len(items)), key=lambda i: len(items[i]["src"]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def predict_programs(model: Seq2Seq, vocab: ProgramVocab, items: Sequence[dict], *, beam: int, max_len: int,
                     grammar: bool = False, length_penalty: float = 0.0, rows: int = 1024) -> list[str]:
    """The best program of beam search (beam 1 = greedy) for each item, in the items' order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rules = ProgramGrammar(vocab, device) if grammar else None
    out: list[str] = [""] * len(items)
    for idx in length_batches(items, max(1, rows // beam)):  # about `rows` hypotheses per batch
        batch = {k: v.to(device) for k, v in collate([items[i] for i in idx], vocab.pad).items()}
        fixed, state = model.start(batch)
        beams = beam_search(model.step, fixed, state, k=beam, max_len=max_len, bos=vocab.bos, eos=vocab.eos,
                            pad=vocab.pad, grammar=rules, n_numbers=batch["n_numbers"],
                            length_penalty=length_penalty, best_only=True)
        for i, tokens in zip(idx, beams.best().tolist()):
            out[i] = vocab.decode(tokens)
    model.train(was_training)
    return out
