"""Sequence metrics and `syllabus score` on a hand-made predictions file with hand-computed numbers."""

import json
from pathlib import Path

import pytest

from syllabus.cli import main
from syllabus.metrics.sequence import length_bucket, program_length, token_accuracy
from syllabus.programs import within

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "col775" / "sample_output.json"

ADD = "what is 2 plus 3 ?"
AREA = "a 4 by 6 rectangle has what area ?"
FRUIT = "10 apples and 4 pears , 3 eaten . how many left ?"
PRICE = "a price of 100 rises to 101.5 , what is it ?"
RECORDS = [
    # problem, gold, answer, predicted         exact exec token           steps
    (ADD, "add(n0,n1)|", 5, "add(n0,n1)|"),  # 1  1  1                  1
    (AREA, "multiply(n0,n1)|", 24, "multiply(n1,n0)|"),  # 0  1  2/4          1
    (FRUIT, "add(n0,n1)|subtract(#0,n2)|", 11, "add(n0,n1|subtract(#0,n2)|"),  # 0  0  8/8 (invalid)  2
    (FRUIT, "add(n0,n1)|subtract(#0,n2)|", 11, "add(n0,n1)|add(#0,n2)|"),  # 0  0  7/8  (17)     2
    (PRICE, "multiply(n1,const_1)|", 101.5, "add(n0,const_1)|"),  # 0  1  2/4  (101: 0.5% off)  1
]


def test_token_accuracy_by_hand():
    assert token_accuracy(["a", "b", "c"], ["a", "x", "c", "d"]) == 2 / 4
    assert token_accuracy([], []) == 1.0
    assert token_accuracy(["a"], []) == 0.0


def test_execution_check_is_two_percent_of_the_answer():
    assert within(102.0, 100.0) and within(98.0, 100.0) and not within(102.1, 100.0)
    assert within(-1.97, -2.0) and not within(-1.95, -2.0) and not within(None, 1.0)
    assert within(0.0, 0.0) and not within(1e-3, 0.0)


def test_program_length_and_buckets():
    assert program_length("add(n0,n1)|subtract(#0,n2)|") == 2
    assert program_length("add(n0,n1)") == 1
    assert [length_bucket(n) for n in (1, 7, 8, 20)] == ["1", "7", "8+", "8+"]


@pytest.fixture
def predictions(tmp_path):
    path = tmp_path / "pred.json"
    path.write_text(json.dumps([{"Problem": p, "linear_formula": g, "answer": a, "predicted": q}
                                for p, g, a, q in RECORDS]))
    return path


def test_score_cli_gives_the_hand_computed_numbers(predictions, capsys):
    assert main(["score", str(predictions), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 5
    assert out["exact_match"] == pytest.approx(1 / 5)
    assert out["execution_accuracy"] == pytest.approx(3 / 5)
    assert out["token_accuracy"] == pytest.approx((1 + 0.5 + 1 + 0.875 + 0.5) / 5)
    assert out["invalid"] == 1
    one, two = out["by_length"]["1"], out["by_length"]["2"]
    assert (one["n"], one["execution_accuracy"], one["invalid"]) == (3, 1.0, 0)
    assert one["exact_match"] == pytest.approx(1 / 3)
    assert one["token_accuracy"] == pytest.approx(2 / 3)
    assert (two["n"], two["exact_match"], two["execution_accuracy"], two["invalid"]) == (2, 0.0, 0.0, 1)
    assert two["token_accuracy"] == pytest.approx(0.9375)
    assert main(["score", str(predictions)]) == 0
    text = capsys.readouterr().out
    assert "all" in text and "20.00%" in text and "60.00%" in text


def test_score_refuses_a_file_without_predictions(tmp_path, capsys):
    path = tmp_path / "gold.json"
    path.write_text(json.dumps([{"Problem": ADD, "linear_formula": "add(n0,n1)|", "answer": 5}]))
    assert main(["score", str(path)]) == 2
    assert "record 0 has no 'predicted'" in capsys.readouterr().err


@pytest.mark.skipif(not SAMPLE.is_file(), reason="../shared/data is not here")
def test_score_of_the_course_sample_output(capsys):
    assert main(["score", str(SAMPLE), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n"], out["exact_match"], out["execution_accuracy"], out["invalid"]) == (5, 0.4, 0.4, 2)
