"""Beam search, batched over examples and beams; greedy decoding is beam size 1.

`BeamSearch.step` is the strategy (as fairseq's `search.py`): from the scores of the k live
hypotheses of each example and the next-token log-probabilities, the k best extensions.
`beam_search` drives any decoder given as `step_fn(fixed, state, prev) -> (log_probs, state)`
whose inputs are dicts of batch-first tensors: it expands the state to B * k rows (the k
hypotheses of an example in consecutive rows) and reorders it by the chosen beams after each
step. `fixed` (the encoder's memory) stays at B rows: a step function shares it across an
example's k rows instead of copying it k times.

A hypothesis that emitted `eos` stays in the beam with its score frozen (its only extension
is `pad` at no cost), so the k results are the k best sequences the search kept, finished or
cut at `max_len`. Scores are sums of log-probabilities; with `length_penalty` alpha > 0 the
final ranking divides them by length ** alpha.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from syllabus.programs.grammar import ProgramGrammar

State = dict[str, torch.Tensor]
StepFn = Callable[[State, State, torch.Tensor], tuple[torch.Tensor, State]]


class BeamSearch:
    """The k best one-token extensions of k hypotheses, per example.

    Args:
        k: beam size.
    """

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"beam size must be >= 1, got {k}")
        self.k = k

    def step(self, lprobs: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """lprobs (B, k, V) next-token log-probs, scores (B, k) of the hypotheses so far ->
        new scores (B, k), the beam each extends (B, k), the token it adds (B, k)."""
        B, k, V = lprobs.shape
        total = (scores.unsqueeze(-1) + lprobs).view(B, k * V)  # (B, k*V)
        top, idx = total.topk(self.k, dim=-1)  # (B, k), sorted best first
        return top, torch.div(idx, V, rounding_mode="floor"), idx % V


@dataclass
class Beams:
    """tokens (B, k, T) with `pad` after `eos`; scores (B, k) summed log-probs; lengths (B, k)
    counting `eos`. Sorted best first (by score / length ** length_penalty)."""

    tokens: torch.Tensor
    scores: torch.Tensor
    lengths: torch.Tensor

    def best(self) -> torch.Tensor:
        return self.tokens[:, 0]  # (B, T)


def expand(tensors: State, k: int) -> State:
    """Each row repeated k times in place: (B, ...) -> (B * k, ...)."""
    return {name: t.repeat_interleave(k, dim=0) for name, t in tensors.items()}


def beam_search(step_fn: StepFn, fixed: State, state: State, *, k: int, max_len: int, bos: int, eos: int,
                pad: int, grammar: ProgramGrammar | None = None, n_numbers: torch.Tensor | None = None,
                length_penalty: float = 0.0, best_only: bool = False) -> Beams:
    """The k best sequences for each of the B examples of `fixed` / `state` (batch-first dicts).

    Args:
        step_fn: `(fixed (B rows), state (N = B * k rows), prev (N,)) -> (log_probs (N, V), state)`.
        grammar: keep only well-formed programs (needs `n_numbers` (B,), the problems' numbers).
        best_only: stop once every example's best hypothesis has ended. Scores only fall as a
            hypothesis grows, so no live one can overtake it: `best()` is exact (without a length
            penalty), and the other k - 1 are whatever the search held then.
    """
    B = next(iter(state.values())).shape[0]
    search, N = BeamSearch(k), B * k
    state = expand(state, k)
    device = next(iter(state.values())).device
    scores = torch.full((B, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # at first only beam 0 is live; the others would repeat it
    tokens = torch.empty(N, 0, dtype=torch.long, device=device)
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    prev = torch.full((N,), bos, dtype=torch.long, device=device)
    gstate = grammar.start(n_numbers.to(device).repeat_interleave(k)) if grammar is not None else None
    offsets = (torch.arange(B, device=device) * k).unsqueeze(1)  # (B, 1)
    specials = torch.tensor([pad, bos], device=device)
    stop_at_best = best_only and length_penalty == 0
    for _ in range(max_len):
        lprobs, state = step_fn(fixed, state, prev)  # (N, V)
        lprobs = lprobs.index_fill(1, specials, float("-inf"))  # live hypotheses never emit pad or bos
        if gstate is not None:
            lprobs = lprobs.masked_fill(~grammar.allowed(gstate), float("-inf"))
        frozen = torch.full_like(lprobs[:1], float("-inf"))
        frozen[0, pad] = 0.0
        lprobs = torch.where(finished.unsqueeze(1), frozen, lprobs)  # finished: only pad, at no cost
        scores, beam, tok = search.step(lprobs.view(B, k, -1), scores)
        rows, tok = (offsets + beam).view(-1), tok.view(-1)  # (N,)
        tokens = torch.cat([tokens[rows], tok.unsqueeze(1)], dim=1)
        state = {name: t[rows] for name, t in state.items()}
        finished = finished[rows] | (tok == eos)
        if gstate is not None:
            gstate = grammar.advance(gstate.select(rows), tok)
        prev = tok
        if bool(finished.all()) or (stop_at_best and bool(finished.view(B, k)[:, 0].all())):
            break
    return _ranked(tokens.view(B, k, -1), scores, eos, pad, length_penalty)


def _ranked(tokens: torch.Tensor, scores: torch.Tensor, eos: int, pad: int, alpha: float) -> Beams:
    lengths = (tokens != pad).sum(-1)  # (B, k); pad only follows eos
    rank = scores / lengths.clamp(min=1).float() ** alpha if alpha > 0 else scores
    order = rank.argsort(dim=-1, descending=True, stable=True)
    pick = lambda t: t.gather(1, order if t.dim() == 2 else order.unsqueeze(-1).expand_as(t))
    return Beams(pick(tokens), pick(scores), pick(lengths))
