"""Grammar-constrained decoding: which program tokens may come next, for a batch of prefixes.

Only well-formed programs: a known operation, exactly its arity of arguments, `#k` only for
earlier steps, `n_i` only for numbers the problem has, `|` or `<eos>` after a complete step
(never an empty program). The state of each row is three small integer tensors, so masking
and advancing N beams costs a few tensor ops per decoding step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from syllabus.programs.ops import OPERATIONS
from syllabus.programs.vocab import ProgramVocab

EXPECT_OP, EXPECT_ARG, AFTER_STEP, DONE = 0, 1, 2, 3


@dataclass
class GrammarState:
    """Per row (N,): phase, arguments still needed, steps begun, numbers of the problem."""

    phase: torch.Tensor
    need: torch.Tensor
    steps: torch.Tensor
    n_numbers: torch.Tensor

    def select(self, idx: torch.Tensor) -> GrammarState:
        return GrammarState(self.phase[idx], self.need[idx], self.steps[idx], self.n_numbers[idx])


class ProgramGrammar:
    """Token classes of a `ProgramVocab`, precomputed as (V,) tensors."""

    def __init__(self, vocab: ProgramVocab, device: torch.device | str = "cpu"):
        V = len(vocab)
        self.vocab = vocab
        arity = torch.zeros(V, dtype=torch.long)
        for name in vocab.ops:
            arity[vocab.index[name]] = OPERATIONS[name].arity
        num = torch.full((V,), -1, dtype=torch.long)
        num[[vocab.index[t] for t in vocab.numbers]] = torch.arange(len(vocab.numbers))
        ref = torch.full((V,), -1, dtype=torch.long)
        ref[[vocab.index[t] for t in vocab.refs]] = torch.arange(len(vocab.refs))
        is_const = torch.zeros(V, dtype=torch.bool)
        is_const[[vocab.index[t] for t in vocab.constants]] = True
        self.arity, self.num, self.ref, self.is_const = (t.to(device) for t in (arity, num, ref, is_const))
        self.is_op = self.arity > 0
        self.eos, self.sep = vocab.eos, vocab.sep
        self.eos_mask = torch.zeros_like(self.is_op)
        self.eos_mask[vocab.eos] = True
        self.end_mask = self.eos_mask.clone()  # after a complete step: `|` or `<eos>`
        self.end_mask[vocab.sep] = True

    def start(self, n_numbers: torch.Tensor) -> GrammarState:
        """The state before the first token, for rows whose problems have `n_numbers` (N,) numbers."""
        zeros = torch.zeros_like(n_numbers)
        return GrammarState(zeros.clone(), zeros.clone(), zeros.clone(), n_numbers)

    def allowed(self, s: GrammarState) -> torch.Tensor:
        """(N, V) bool: the tokens each row may emit next."""
        phase = s.phase[:, None]
        op_ok = self.is_op[None] & (s.steps < len(self.vocab.refs))[:, None]
        stop_ok = self.eos_mask[None] & (s.steps > 0)[:, None]  # never an empty program
        num_ok = (self.num[None] >= 0) & (self.num[None] < s.n_numbers[:, None])
        ref_ok = (self.ref[None] >= 0) & (self.ref[None] < (s.steps - 1)[:, None])  # earlier steps only
        arg_ok = self.is_const[None] | num_ok | ref_ok
        return (((phase == EXPECT_OP) & (op_ok | stop_ok)) | ((phase == EXPECT_ARG) & arg_ok)
                | ((phase == AFTER_STEP) & self.end_mask[None]) | ((phase == DONE) & self.eos_mask[None]))

    def advance(self, s: GrammarState, tokens: torch.Tensor) -> GrammarState:
        """The state after each row emits `tokens` (N,) (assumed allowed)."""
        is_eos, is_sep = tokens == self.eos, tokens == self.sep
        is_op = self.is_op[tokens] & (s.phase == EXPECT_OP)
        arg = s.phase == EXPECT_ARG
        need = torch.where(is_op, self.arity[tokens], torch.where(arg, s.need - 1, s.need))
        phase = torch.where(is_op, EXPECT_ARG, s.phase)
        phase = torch.where(arg & (need == 0), AFTER_STEP, phase)
        phase = torch.where((s.phase == AFTER_STEP) & is_sep, EXPECT_OP, phase)
        phase = torch.where(is_eos, DONE, phase)
        return GrammarState(phase, need, s.steps + is_op.long(), s.n_numbers)
