"""`syllabus data check col775|mathqa` and `syllabus score PRED.json`: text (or JSON) to print."""

from __future__ import annotations

import json
from pathlib import Path

from syllabus.data import mathqa
from syllabus.errors import UsageError
from syllabus.metrics.sequence import METRICS, gold_check, score

SHOW_FAILURES = 20


def data_check(name: str, file: str | None = None, as_json: bool = False) -> str:
    """Share of gold programs that reproduce their answers, per file, with the failures."""
    if name not in ("col775", "mathqa"):
        raise UsageError(f"data check takes col775 or mathqa, not {name!r}")
    if file:
        paths = {Path(file).stem: Path(file)}
    elif name == "col775":
        paths = {s: mathqa.SHIPPED / f"{s}.json.xz" for s in ("dev", "train")}
    else:
        raise UsageError("data check mathqa needs --file path/to/mathqa/dev.json (MathQA is not shipped)")
    results = {split: {"file": str(p), **gold_check(mathqa.load(p, name))} for split, p in paths.items()}
    if as_json:
        return json.dumps(results, indent=1)
    what = "reproduce their answer within 2%" if name == "col775" else "land nearest the correct option"
    lines = []
    for split, r in results.items():
        lines.append(f"{name} {split} ({r['file']}): {r['reproduced']} / {r['n']} gold programs {what} "
                     f"({100 * r['share']:.2f}%)")
        for f in r["failures"][:SHOW_FAILURES]:
            got = f"error: {f['error']}" if f["error"] else f"value {f['value']:.6g}"
            want = f"answer {f['answer']:g}" if f["answer"] is not None else f"correct option {'abcde'[f['correct']]}"
            lines.append(f"  record {f['index']}: {f['program']}  {got}, {want}")
        if len(r["failures"]) > SHOW_FAILURES:
            lines.append(f"  ... and {len(r['failures']) - SHOW_FAILURES} more (--json lists all)")
    return "\n".join(lines)


def read_predictions(path: Path) -> tuple[list[mathqa.MathRecord], list[str]]:
    """Records and their `predicted` programs from a file in the course's submission format."""
    data = mathqa.read_records(path)
    name = "mathqa" if "answer" not in data[0] and "options" in data[0] else "col775"
    records = mathqa.mathqa_records(path, data) if name == "mathqa" else mathqa.col775_records(path, data)
    preds = []
    for i, rec in enumerate(data):
        if "predicted" not in rec:
            raise UsageError(f"{path}: record {i} has no 'predicted' field (write it with syllabus predict)")
        preds.append(rec["predicted"] if isinstance(rec["predicted"], str) else "")
    return records, preds


def score_command(file: str, as_json: bool = False) -> str:
    """Exact match, execution accuracy, token accuracy and invalid count, overall and per length."""
    records, preds = read_predictions(Path(file))
    result = score(records, preds)
    if as_json:
        return json.dumps(result, indent=1)
    return format_scores(result, title=f"{file}: {result['n']} predictions")


def format_scores(result: dict, title: str) -> str:
    lines = [title, f"{'steps':>6} {'n':>6} {'exact':>7} {'exec':>7} {'token':>7} {'invalid':>8}"]
    rows = [*result["by_length"].items(), ("all", result)]
    for label, r in rows:
        lines.append(f"{label:>6} {r['n']:>6} " + " ".join(f"{100 * r[m]:>6.2f}%" for m in METRICS)
                     + f" {r['invalid']:>8}")
    if result["invalid_reasons"]:
        lines.append("invalid: " + "; ".join(f"{k} ({v})" for k, v in result["invalid_reasons"].items()))
    return "\n".join(lines)
