"""The output vocabulary of the program decoders, fixed (not learned from data).

Tokens: `<pad> <bos> <eos> <unk> |`, every operation, the constants of MathQA, `n0..n{N-1}`
and `#0..#{R-1}`. A fixed list means a checkpoint's output layer never depends on which
training subset it saw.
"""

from __future__ import annotations

from syllabus.programs.language import SEP, program_tokens, tokens_to_text
from syllabus.programs.ops import OPERATIONS

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
CONSTANTS = (
    "const_pi", "const_deg_to_rad", "const_1", "const_2", "const_3", "const_4", "const_5", "const_6",
    "const_10", "const_12", "const_26", "const_52", "const_60", "const_100", "const_180", "const_360",
    "const_1000", "const_3600", "const_0_25", "const_0_33", "const_0_2778", "const_0_3937", "const_0_6",
    "const_1_6", "const_2_54", "const_3_6", "const_0_4535", "const_2_2046", "const_2.0", "const_3.0",
    "const_4.0", "const_60.0", "const_100.0",
)


class ProgramVocab:
    """Program tokens <-> ids.

    Args:
        max_numbers: `n0 .. n{max_numbers-1}` are tokens (COL775 uses up to n17).
        max_refs: `#0 .. #{max_refs-1}` are tokens (COL775 uses up to #47).
    """

    def __init__(self, max_numbers: int = 40, max_refs: int = 64):
        self.max_numbers, self.max_refs = max_numbers, max_refs
        self.specials = [PAD, BOS, EOS, UNK, SEP]
        self.ops = sorted(OPERATIONS)
        self.constants = list(CONSTANTS)
        self.numbers = [f"n{i}" for i in range(max_numbers)]
        self.refs = [f"#{k}" for k in range(max_refs)]
        self.tokens = self.specials + self.ops + self.constants + self.numbers + self.refs
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.pad, self.bos, self.eos, self.unk, self.sep = (self.index[t] for t in self.specials)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, program: str) -> list[int]:
        """Token ids of a program text, ending with `<eos>`."""
        return [self.index.get(t, self.unk) for t in program_tokens(program)] + [self.eos]

    def decode(self, ids: list[int]) -> str:
        """Program text of ids (up to the first `<eos>`; `<pad>` and `<bos>` dropped)."""
        out = []
        for i in ids:
            if i == self.eos:
                break
            if i not in (self.pad, self.bos):
                out.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return tokens_to_text(out)
