"""The MathQA program text: numbers of a problem, constants, tokens, and the parser.

A program is `op(arg,arg)|op(arg)|...`, optionally ending with `|`. An argument is `n_i` (the
i-th number of the problem), `#k` (the result of step k, counted from 0) or a constant
`const_X` (X with `_` read as `.`; `const_pi` is pi, `const_deg_to_rad` is pi/180). The
value of a program is the value of its last step.

Tokens (what the models read and write, and what token accuracy compares) are the names and
the `|` separators, without parentheses and commas: `add(n0,n1)|` is `add n0 n1 |`.
`tokens_to_text` puts the punctuation back, so canonical text round-trips exactly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from syllabus.programs.ops import OPERATIONS, ProgramError

NUMBER = re.compile(r"[-+]?\d*\.\d+|\d+")
THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
TOKEN = re.compile(r"[^(),|\s]+|\|")
STEP = re.compile(r"\s*([A-Za-z_]\w*)\s*\(([^()]*)\)\s*")
ARG = re.compile(r"n(\d+)|#(\d+)|const_(\w+(?:\.\d+)?)")
SEP = "|"

MAX_PROGRAM_CHARS = 20_000  # a program text longer than this is refused before parsing
MAX_STEPS = 200

NAMED_CONSTANTS = {"pi": math.pi, "deg_to_rad": math.pi / 180}


def number_spans(problem: str) -> list[tuple[float, int, int]]:
    """(value, start, end) of each number of `problem`, in order; offsets in `problem` itself.

    Numbers are matches of `[-+]?\\d*\\.\\d+|\\d+` after thousands commas ("1,000") are removed.
    """
    commas = [m.start() for m in THOUSANDS_COMMA.finditer(problem)]
    if not commas:
        return [(float(m.group()), m.start(), m.end()) for m in NUMBER.finditer(problem)]
    drop = set(commas)
    keep = [i for i in range(len(problem)) if i not in drop]  # clean offset -> offset in problem
    clean = "".join(problem[i] for i in keep)
    return [(float(m.group()), keep[m.start()], keep[m.end() - 1] + 1) for m in NUMBER.finditer(clean)]


def extract_numbers(problem: str) -> list[float]:
    """The numbers `n0, n1, ...` of a problem."""
    return [v for v, _, _ in number_spans(problem)]


def constant_value(name: str) -> float:
    """`const_100` -> 100.0, `const_0_25` -> 0.25, `const_2.0` -> 2.0, `const_pi` -> pi."""
    body = name[len("const_"):] if name.startswith("const_") else None
    if body in NAMED_CONSTANTS:
        return NAMED_CONSTANTS[body]
    text = body.replace("_", ".", 1) if body is not None else ""
    if not re.fullmatch(r"\d+(\.\d+)?", text):
        raise ProgramError(f"unknown constant {name!r}")
    return float(text)


def program_tokens(text: str) -> list[str]:
    """The tokens of any program text (well formed or not): names and `|`."""
    return TOKEN.findall(text)


def tokens_to_text(tokens: list[str]) -> str:
    """Inverse of `program_tokens` on canonical programs: `add n0 n1 |` -> `add(n0,n1)|`."""
    steps, current = [], []
    for tok in [*tokens, None]:
        if tok in (SEP, None):
            if current or tok is SEP:
                steps.append(f"{current[0]}({','.join(current[1:])})" if current else "")
            current = []
        else:
            current.append(tok)
    text = SEP.join(steps)
    return text + SEP if tokens and tokens[-1] == SEP else text


@dataclass(frozen=True)
class Step:
    op: str
    args: tuple[str, ...]


def parse(text: str) -> tuple[Step, ...]:
    """The steps of a program, or ProgramError saying why it is not one."""
    if not isinstance(text, str):
        raise ProgramError(f"program is not text ({type(text).__name__})")
    if len(text) > MAX_PROGRAM_CHARS:
        raise ProgramError(f"program longer than {MAX_PROGRAM_CHARS} characters")
    parts = text.strip().split(SEP)
    if parts and parts[-1].strip() == "" and len(parts) > 1:
        parts = parts[:-1]  # one trailing separator is allowed
    if len(parts) > MAX_STEPS:
        raise ProgramError(f"more than {MAX_STEPS} steps")
    return tuple(parse_step(part, k) for k, part in enumerate(parts))


def parse_step(part: str, k: int) -> Step:
    m = STEP.fullmatch(part)
    if not m:
        raise ProgramError(f"step {k} is not op(args): {part[:40]!r}" if part.strip() else f"step {k} is empty")
    name, body = m.group(1), m.group(2)
    if name not in OPERATIONS:
        raise ProgramError(f"step {k}: unknown operation {name!r}")
    args = tuple(a.strip() for a in body.split(",")) if body.strip() else ()
    arity = OPERATIONS[name].arity
    if len(args) != arity:
        raise ProgramError(f"step {k}: {name} takes {arity} argument(s), got {len(args)}")
    for a in args:
        if not ARG.fullmatch(a):
            raise ProgramError(f"step {k}: bad argument {a[:20]!r}")
    return Step(name, args)
