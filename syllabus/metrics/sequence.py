"""Scores of predicted programs: exact match, execution accuracy, token accuracy, invalid count.

- exact match: the predicted text equals the gold `linear_formula` (string equality, as the
  course's checker).
- execution accuracy: the predicted program runs and its value is within 2% of `answer`
  (COL775), or is nearest the correct option (MathQA records: `options` + `correct`).
- token accuracy: the program tokens (names and `|`, see `syllabus.programs.language`) of
  prediction and gold compared position by position; matches / max(len(pred), len(gold)),
  averaged over problems (two empty programs count 1).
- invalid: predictions that do not parse or cannot run, with their reasons.
Every number is also given per gold program length (steps: 1, 2, ..., `8+`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from syllabus.data.mathqa import MathRecord, nearest_option
from syllabus.programs import Execution, extract_numbers, program_tokens, solve, within
from syllabus.programs.execute import execute

METRICS = ("exact_match", "execution_accuracy", "token_accuracy")
MAX_BUCKET = 8


def token_accuracy(pred: Sequence[str], gold: Sequence[str]) -> float:
    """Position-wise matches over the longer of the two token lists."""
    longest = max(len(pred), len(gold))
    if longest == 0:
        return 1.0
    return sum(p == g for p, g in zip(pred, gold)) / longest


def program_length(program: str) -> int:
    """Number of steps of a program text (`|`-separated, a trailing `|` not counted)."""
    return len([s for s in program.strip().split("|") if s.strip()])


def length_bucket(steps: int) -> str:
    return f"{MAX_BUCKET}+" if steps >= MAX_BUCKET else str(steps)


def is_correct(record: MathRecord, run: Execution) -> bool:
    """Execution check of one record: within 2% of `answer`, or the nearest option is correct."""
    if record.answer is not None:
        return within(run.value, record.answer)
    return run.valid and nearest_option(run.value, record.options) == record.correct


def judge(record: MathRecord, predicted: str, numbers: Sequence[float] | None = None) -> dict:
    """Every score of one prediction, plus its value and, when invalid, why."""
    numbers = extract_numbers(record.problem) if numbers is None else numbers
    pred = predicted if isinstance(predicted, str) else ""
    run = execute(predicted, numbers)
    return {"exact_match": float(pred == record.program), "execution_accuracy": float(is_correct(record, run)),
            "token_accuracy": token_accuracy(program_tokens(pred), program_tokens(record.program)),
            "invalid": not run.valid, "error": run.error, "value": run.value,
            "length": program_length(record.program)}


def aggregate(judged: list[dict]) -> dict:
    """Means of the scores, the invalid count and its reasons, and the same per length bucket."""
    out = _means(judged)
    reasons = Counter(_reason(j["error"]) for j in judged if j["invalid"])
    out["invalid_reasons"] = dict(reasons.most_common(10))
    buckets: dict[str, list[dict]] = {}
    for j in sorted(judged, key=lambda j: j["length"]):
        buckets.setdefault(length_bucket(j["length"]), []).append(j)
    out["by_length"] = {b: _means(js) for b, js in buckets.items()}
    return out


def _means(judged: list[dict]) -> dict:
    n = len(judged)
    out: dict = {"n": n}
    for key in METRICS:
        out[key] = sum(j[key] for j in judged) / n if n else 0.0
    out["invalid"] = sum(j["invalid"] for j in judged)
    return out


def _reason(error: str) -> str:
    """An error message without its step number and values, to count kinds of failure."""
    text = re.sub(r"^step \d+:?\s*", "", error)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "...", text)
    return " ".join(w for w in text.split() if not any(c.isdigit() for c in w))[:60]


def score(records: Sequence[MathRecord], predicted: Sequence[str]) -> dict:
    """Scores of predictions against records (same order)."""
    if len(records) != len(predicted):
        raise ValueError(f"{len(records)} records but {len(predicted)} predictions")
    return aggregate([judge(r, p) for r, p in zip(records, predicted)])


def gold_check(records: Sequence[MathRecord]) -> dict:
    """How many gold programs reproduce their answer (or land nearest the correct option)."""
    failures = []
    for i, rec in enumerate(records):
        run = solve(rec.problem, rec.program)
        if not is_correct(rec, run):
            failures.append({"index": i, "program": rec.program, "answer": rec.answer,
                             "correct": rec.correct, "value": run.value, "error": run.error})
    n = len(records)
    return {"n": n, "reproduced": n - len(failures), "share": (n - len(failures)) / n if n else 0.0,
            "failures": failures}
