"""Beam search: exhaustive enumeration on scripted decoders, k = 1 is greedy, batching, grammar."""

import math

import pytest
import torch

from syllabus.data import mathqa
from syllabus.nn.beam import BeamSearch, beam_search
from syllabus.nn.seq2seq import GloveEncoder, LSTMDecoder, Seq2Seq, collate
from syllabus.programs import execute, extract_numbers, parse
from syllabus.programs.grammar import ProgramGrammar
from syllabus.programs.vocab import ProgramVocab

PAD, BOS, EOS = 0, 1, 2


class RandomScript:
    """Log-probs a fixed random function of the whole prefix (and the example), never pad or bos."""

    def __init__(self, V: int, seed: int = 0, size: int = 100_003):
        g = torch.Generator().manual_seed(seed)
        self.V, self.table = V, 2.0 * torch.randn(size, V, generator=g)
        self.table[:, [PAD, BOS]] = float("-inf")

    def start(self, B: int):
        return {}, {"code": torch.arange(B) + 1}  # each example its own table rows

    def step(self, fixed, state, prev):
        code = state["code"] * (self.V + 1) + prev + 1  # (N,) identifies the prefix
        return self.table[code % len(self.table)].log_softmax(-1), {"code": code}


def enumerate_all(script, example: int, max_len: int) -> list[tuple[list[int], float]]:
    """Every sequence the decoder can emit (ending in eos, or cut at max_len) with its log-prob."""
    out = []

    def walk(prefix, state, prev, score):
        if prefix and (prefix[-1] == EOS or len(prefix) == max_len):
            out.append((prefix, score))
            return
        lp, new = script.step({}, state, torch.tensor([prev]))
        for tok in range(script.V):
            if math.isfinite(lp[0, tok]):
                walk(prefix + [tok], new, tok, score + lp[0, tok].item())

    walk([], {"code": torch.tensor([example + 1])}, BOS, 0.0)
    return sorted(out, key=lambda s: -s[1])


def run(script, B, k, max_len, **kw):
    fixed, state = script.start(B)
    return beam_search(script.step, fixed, state, k=k, max_len=max_len, bos=BOS, eos=EOS, pad=PAD, **kw)


def strip(tokens: torch.Tensor) -> list[int]:
    return [t for t in tokens.tolist() if t != PAD]


def test_beam_wide_enough_returns_exactly_the_best_sequences_of_exhaustive_enumeration():
    script, max_len, B = RandomScript(V=5), 4, 3  # tokens eos, 3, 4: 1 + 2 + 4 + 8 + 16 = 31 sequences
    beams = run(script, B, k=40, max_len=max_len)
    for b in range(B):
        truth = enumerate_all(script, b, max_len)
        assert len(truth) == 31
        for rank in range(10):
            assert strip(beams.tokens[b, rank]) == truth[rank][0]
            assert beams.scores[b, rank].item() == pytest.approx(truth[rank][1], abs=1e-5)


class TableScript:
    """Hand-written next-token probabilities per prefix; unlisted prefixes end (eos)."""

    A, B_ = 3, 4
    PROBS = {(): {3: 0.6, 4: 0.4}, (3,): {3: 0.4, 4: 0.3, EOS: 0.3}, (4,): {EOS: 0.9, 3: 0.1},
             (3, 3): {EOS: 1.0}, (3, 4): {EOS: 1.0}, (4, 3): {EOS: 1.0}}

    def start(self, B):
        return {}, {"prefix": torch.zeros(B, 0, dtype=torch.long)}

    def step(self, fixed, state, prev):
        prefix = state["prefix"] if prev[0] == BOS and state["prefix"].shape[1] == 0 else \
            torch.cat([state["prefix"], prev[:, None]], 1)
        lp = torch.full((len(prev), 5), float("-inf"))
        for i, p in enumerate(prefix.tolist()):
            for tok, prob in self.PROBS.get(tuple(p), {EOS: 1.0}).items():
                lp[i, tok] = math.log(prob)
        return lp, {"prefix": prefix}


def test_scripted_beams_by_hand():
    """Greedy takes 3 (0.6) and ends at 0.6 * 0.4 = 0.24; beam 2 finds [4, eos] at 0.36."""
    beams = run(TableScript(), B=1, k=2, max_len=3)
    assert strip(beams.tokens[0, 0]) == [4, EOS] and beams.scores[0, 0].item() == pytest.approx(math.log(0.36))
    assert strip(beams.tokens[0, 1]) == [3, 3, EOS]
    assert beams.scores[0, 1].item() == pytest.approx(math.log(0.24))
    greedy = run(TableScript(), B=1, k=1, max_len=3)
    assert strip(greedy.tokens[0, 0]) == [3, 3, EOS]


def test_search_step_shapes_and_order():
    lprobs = torch.log(torch.tensor([[[0.1, 0.9], [0.5, 0.5]]]))  # (B=1, k=2, V=2)
    scores, beam, tok = BeamSearch(2).step(lprobs, torch.log(torch.tensor([[0.5, 0.5]])))
    assert beam.tolist() == [[0, 1]] and tok.tolist()[0][0] == 1
    assert scores.exp().tolist()[0] == pytest.approx([0.45, 0.25])


def tiny_model(seed=0):
    torch.manual_seed(seed)
    vocab = ProgramVocab()
    records = mathqa.shipped("dev")[:6]
    words = ["<pad>", "<unk>"] + sorted({w for r in records for w in r.problem.split()})
    model = Seq2Seq(GloveEncoder(words, torch.randn(len(words), 16), hidden=32),
                    LSTMDecoder(len(vocab), hidden=32, embed_dim=16), vocab.bos, vocab.eos, vocab.pad).eval()
    items = [{**model.encoder.featurize(r.problem), "n_numbers": len(extract_numbers(r.problem))} for r in records]
    return model, vocab, items


def model_beams(model, vocab, items, k, **kw):
    batch = collate(items, vocab.pad)
    with torch.no_grad():
        fixed, state = model.start(batch)
        return beam_search(model.step, fixed, state, k=k, max_len=12, bos=vocab.bos, eos=vocab.eos,
                           pad=vocab.pad, n_numbers=batch["n_numbers"], **kw)


def test_beam_one_is_greedy_on_a_real_model():
    model, vocab, items = tiny_model()
    greedy = model.greedy(collate(items, vocab.pad), max_len=12)
    best = model_beams(model, vocab, items, k=1).best()
    assert torch.equal(best[:, :greedy.shape[1]], greedy)


def test_batched_beams_equal_one_example_at_a_time():
    model, vocab, items = tiny_model(1)
    batched = model_beams(model, vocab, items, k=4)
    for i, item in enumerate(items):
        alone = model_beams(model, vocab, [item], k=4)
        T = alone.tokens.shape[-1]
        assert torch.equal(batched.tokens[i, :, :T], alone.tokens[0])
        assert torch.allclose(batched.scores[i], alone.scores[0], atol=1e-5)


def test_grammar_constrained_beams_are_well_formed_programs():
    model, vocab, items = tiny_model(2)
    beams = model_beams(model, vocab, items, k=5, grammar=ProgramGrammar(vocab))
    for i, item in enumerate(items):
        for rank in range(5):
            ids = beams.tokens[i, rank].tolist()
            if not math.isfinite(beams.scores[i, rank]) or vocab.eos not in ids:
                continue
            text = vocab.decode(ids)
            parse(text)  # raises if it is not a program
            err = execute(text, [1.0] * item["n_numbers"]).error or ""
            assert "problem has" not in err and "before it is computed" not in err


def test_grammar_accepts_the_gold_programs_of_the_shipped_dev_split():
    vocab = ProgramVocab()
    grammar = ProgramGrammar(vocab)
    records = mathqa.shipped("dev")[:800]
    seqs = [vocab.encode(r.program) for r in records]
    T = max(map(len, seqs))
    tokens = torch.full((len(seqs), T), vocab.eos)  # after eos: only eos is allowed
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s)
    state = grammar.start(torch.tensor([len(extract_numbers(r.problem)) for r in records]))
    rows = torch.arange(len(seqs))
    for t in range(T):
        assert grammar.allowed(state)[rows, tokens[:, t]].all(), t
        state = grammar.advance(state, tokens[:, t])
    bad = grammar.allowed(grammar.start(torch.tensor([2])))[0]
    assert not bad[vocab.eos] and not bad[vocab.index["n0"]] and bad[vocab.index["add"]]  # no empty program


def test_length_penalty_reranks_by_mean_log_prob():
    script = RandomScript(V=5, seed=3)
    plain = run(script, B=2, k=40, max_len=4)
    norm = run(script, B=2, k=40, max_len=4, length_penalty=1.0)
    for b in range(2):
        finite = torch.isfinite(norm.scores[b])
        ranked = (norm.scores[b] / norm.lengths[b].float())[finite]
        assert (ranked[:-1] >= ranked[1:] - 1e-6).all()
        assert sorted(plain.scores[b][torch.isfinite(plain.scores[b])].tolist()) == \
            pytest.approx(sorted(norm.scores[b][finite].tolist()))


@pytest.mark.parametrize("k", [2, 5])
def test_best_only_stops_early_with_the_same_best_sequence(k):
    script = RandomScript(V=6, seed=3)
    full, early = run(script, 40, k, 12), run(script, 40, k, 12, best_only=True)
    for b in range(40):
        assert strip(early.best()[b]) == strip(full.best()[b])
        assert early.scores[b, 0] == full.scores[b, 0]
    assert early.tokens.shape[-1] < full.tokens.shape[-1]  # it did stop before every beam had ended
