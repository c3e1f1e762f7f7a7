"""Report sections of `math-programs`: one run, and the comparison of a sweep.

The page skeleton adds the headline, the loss curves and the configuration; these sections add
the scores with and without grammar-constrained decoding, accuracy by program length, example
problems, and the published numbers to read ours against.
"""

from __future__ import annotations

from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.report.pages import Point
from syllabus.runs import Run

METRICS = ("exact_match", "execution_accuracy", "token_accuracy")
ANCHORS = [
    {"model": "GloVe BiLSTM -> LSTM (public solutions of this assignment)", "data": "COL775 dev",
     "execution accuracy": 0.46},
    {"model": "BERT + LSTM decoder (public solutions of this assignment)", "data": "COL775 dev",
     "execution accuracy": 0.11},
    {"model": "Seq2prog (Amini et al. 2019)", "data": "MathQA test", "execution accuracy": 0.52},
    {"model": "RoBERTa deductive reasoner (Jie et al. 2022)", "data": "MathQA test", "execution accuracy": 0.786},
]
TOKEN_NOTE = ("Exact match: the predicted text equals the gold program. Execution accuracy: the predicted program runs "
              "(our interpreter, never eval) and its value is within 2% of the answer. Token accuracy: program tokens "
              "(operations, arguments, `|`) compared position by position, matches over the longer length. Invalid: "
              "predictions that do not parse or cannot run.")


def score_rows(scores: dict) -> list[dict]:
    """One row per (split, decoding) with the three metrics and the invalid count."""
    rows = []
    for tag, s in scores.items():
        split, _, grammar = tag.partition("/")
        rows.append({"split": split, "decoding": "grammar-constrained" if grammar else "free",
                     **{m: s[m] for m in METRICS}, "invalid": s["invalid"], "n": s["n"]})
    return rows


def length_rows(by_length: dict) -> list[dict]:
    return [{"steps": k, "n": v["n"], **{m: v[m] for m in METRICS}, "invalid": v["invalid"]}
            for k, v in by_length.items()]


def by_length_figure(named: dict[str, dict], title: str):
    """Execution accuracy per gold program length, one bar group per length."""
    table = {length: {name: s["by_length"][length]["execution_accuracy"] for name, s in named.items()
                      if length in s["by_length"]}
             for length in dict.fromkeys(k for s in named.values() for k in s["by_length"])}
    return plots.plot_grouped_bars(table, title=title, ylabel="execution accuracy")


def report_sections(rep: Report, run: Run) -> None:
    s = run.read_summary()
    rep.section("Scores of the best checkpoint")
    rep.text(f"Model {s['arch']}, teacher forcing p = {s['teacher_forcing']}, beam {s['beam']}; best epoch "
             f"{s['best_epoch']} of {s['epochs_run']}, {s['time_per_epoch']:.1f} s per epoch, {s['params']:,} "
             f"parameters. " + TOKEN_NOTE)
    rep.table(score_rows(s["scores"]), highlight_best={m: "max" for m in METRICS})
    rep.section("Accuracy by program length (test)")
    named = {"free": s["scores"]["test"], "grammar-constrained": s["scores"]["test/grammar"]}
    rep.figure(by_length_figure(named, "Test execution accuracy by gold program length"), "accuracy_by_length")
    rep.table(length_rows(s["scores"]["test"]["by_length"]))
    if s.get("beam_study"):
        beam_study_section(rep, s)
    reasons = s["scores"]["test"]["invalid_reasons"]
    if reasons:
        rep.text("Why test predictions were invalid: " + "; ".join(f"{k} ({v})" for k, v in reasons.items()) + ".")
    for kind in ("right", "wrong"):
        rows = s["examples"].get(kind, [])
        if rows:
            rep.section(f"Example test problems the model got {kind}")
            rep.table(rows, floatfmt="{:.4g}")
    rep.section("Published numbers to read ours against")
    rep.text("Not the same budget: these train for many epochs on a GPU (the last two on MathQA, with its own "
             "splits). The quick profile trains minutes on a CPU.")
    rep.table(ANCHORS)
    rep.link("predictions_test.json", "predictions_test.json (the test split in the course's submission format)")


def beam_study_section(rep: Report, s: dict) -> None:
    """The beam sizes of `model.beam_study`, each decoding the same trained model."""
    study = s["beam_study"]
    rep.section("Beam size study (one trained model)")
    rep.text(f"The best checkpoint decoded with each beam size ({'grammar-constrained' if s['grammar'] else 'free'} "
             "decoding); beam 1 is greedy.")
    rep.table([{"beam": int(k), "split": split, **{m: sc[m] for m in METRICS}, "invalid": sc["invalid"]}
               for k, by_split in study.items() for split, sc in by_split.items()],
              highlight_best={m: "max" for m in METRICS})
    rep.figure(plots.plot_grouped_bars({f"beam {k}": {m: v["test"][m] for m in METRICS} for k, v in study.items()},
                                       title="Test scores by beam size", ylabel="share"), "beam_study")


def sweep_sections(rep: Report, points: list[Point]) -> dict:
    rows = []
    for p in points:
        s = p.summary
        rows.append({"run": p.label, **{f"test/{m}": s[f"test/{m}"] for m in METRICS},
                     "test/grammar/execution_accuracy": s["test/grammar/execution_accuracy"],
                     **{f"val/{m}": s[f"val/{m}"] for m in METRICS}, "test/invalid": s["test/invalid"],
                     "time_per_epoch": s["time_per_epoch"]})
    rep.section("Scores per run (best checkpoint of each)")
    rep.text(TOKEN_NOTE)
    rep.table(rows, highlight_best={k: "max" for k in rows[0] if "accuracy" in k or "match" in k})
    rep.figure(plots.plot_grouped_bars({p.label: {m: p.summary[f"test/{m}"] for m in METRICS} for p in points},
                                       title="Test scores", ylabel="share"), "test_scores")
    rep.section("Accuracy by program length (test)")
    rep.figure(by_length_figure({p.label: p.summary["scores"]["test"] for p in points},
                                "Test execution accuracy by gold program length"), "accuracy_by_length")
    rep.section("Published numbers to read ours against")
    rep.table(ANCHORS)
    best = max(rows, key=lambda r: r["test/execution_accuracy"])
    return {"best": best["run"]}
