"""The interpreter: a program and a problem's numbers -> a value, or the reason it has none.

No `eval`: each step looks its operation up in `OPERATIONS` and applies it to floats.
Nothing raises out of `execute`; an invalid program comes back with `error` set.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from syllabus.programs.language import ARG, Step, constant_value, extract_numbers, parse
from syllabus.programs.ops import OPERATIONS, ProgramError

MAX_INT = int(sys.float_info.max)  # exact ints are capped at the float range, as floats are


@dataclass(frozen=True)
class Execution:
    """The value of a program (None when invalid) and, when invalid, why."""

    value: float | None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None


def argument_value(arg: str, numbers: Sequence[float], results: list[float]) -> float:
    m = ARG.fullmatch(arg)
    if m is None:
        raise ProgramError(f"bad argument {arg[:20]!r}")
    if m.group(1) is not None:
        i = int(m.group(1))
        if i >= len(numbers):
            raise ProgramError(f"n{i} but the problem has {len(numbers)} number(s)")
        return numbers[i]
    if m.group(2) is not None:
        k = int(m.group(2))
        if k >= len(results):
            raise ProgramError(f"#{k} used in step {len(results)}, before it is computed")
        return results[k]
    return constant_value(arg)


def run_steps(steps: Sequence[Step], numbers: Sequence[float]) -> float:
    """The value of the last step; ProgramError (or an arithmetic error) when there is none."""
    if not steps:
        raise ProgramError("empty program")
    results: list[float | int] = []
    for k, step in enumerate(steps):
        args = [argument_value(a, numbers, results) for a in step.args]
        try:
            value = OPERATIONS[step.op].fn(*args)
        except ProgramError as e:
            raise ProgramError(f"step {k}: {step.op}: {e}") from None
        except OverflowError:
            raise ProgramError(f"step {k}: {step.op} overflows") from None
        except (ArithmeticError, ValueError, TypeError) as e:  # math domain errors
            raise ProgramError(f"step {k}: {step.op}: {e}") from None
        results.append(checked(value, k, step.op))
    return float(results[-1])


def checked(value: object, k: int, op: str) -> float | int:
    """A step's value if it is a real number within the float range (ints stay exact)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProgramError(f"step {k}: {op} gives {type(value).__name__}")
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ProgramError(f"step {k}: {op} overflows")
        return value
    if not math.isfinite(value):
        raise ProgramError(f"step {k}: {op} gives {value}")
    return value


def execute(program: str, numbers: Sequence[float]) -> Execution:
    """Run program text on the numbers `n0, n1, ...`; never raises."""
    try:
        return Execution(run_steps(parse(program), numbers))
    except ProgramError as e:
        return Execution(None, str(e))


def solve(problem: str, program: str) -> Execution:
    """Run a program on the numbers of a problem's text."""
    return execute(program, extract_numbers(problem))


def within(value: float | None, answer: float, rel: float = 0.02) -> bool:
    """The course's execution check: `value` within `rel` (2%) of `answer`.

    Relative to |answer|; an answer of 0 needs |value| <= 1e-9 (nothing is 2% of zero).
    """
    if value is None:
        return False
    return abs(value - answer) <= max(rel * abs(answer), 1e-9)
