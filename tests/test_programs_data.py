"""COL775 / MathQA data: the shipped splits, gold programs reproducing gold answers, loaders."""

import json
import lzma
from pathlib import Path

import pytest

from syllabus.cli import main
from syllabus.data import mathqa
from syllabus.errors import UsageError
from syllabus.metrics.sequence import gold_check

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "col775").is_dir(), reason="../shared/data is not here")


@pytest.fixture(scope="module")
def shipped():
    return {s: mathqa.shipped(s) for s in ("train", "dev")}


def test_shipped_splits_are_complete(shipped):
    assert len(shipped["train"]) == 19791 and len(shipped["dev"]) == 2961
    first = shipped["dev"][0]
    assert first.program == "power(n1,n0)|" and first.answer == 625.0
    assert (mathqa.SHIPPED / "NOTICE").read_text().count("Apache") >= 1
    assert "Apache License" in (mathqa.SHIPPED / "LICENSE-MathQA.txt").read_text()


def test_gold_programs_reproduce_the_shipped_answers(shipped):
    dev = gold_check(shipped["dev"])
    assert dev["reproduced"] == 2961
    train = gold_check(shipped["train"])
    assert train["share"] >= 0.999
    assert [f["index"] for f in train["failures"]] == [5574, 16638]  # the two cube-edge records (answers rounded)


@needs_shared
@pytest.mark.parametrize("split", ["train", "dev"])
def test_shipped_copy_is_the_shared_file(split):
    shipped_bytes = lzma.decompress((mathqa.SHIPPED / f"{split}.json.xz").read_bytes())
    assert shipped_bytes == (SHARED / "col775" / f"{split}.json").read_bytes()


@needs_shared
def test_mathqa_dev_gold_lands_nearest_the_correct_option():
    records = mathqa.load(SHARED / "mathqa" / "dev.json", "mathqa")
    assert len(records) == 4475
    share = gold_check(records)["share"]
    assert 0.75 <= share <= 0.80  # the dataset is noisy: about 77% with the course's conventions


def test_options_in_both_spellings():
    plain = "a ) 38 , b ) 27.675 , c ) 1,200 , d ) 31 / 36 , e ) none of these"
    listed = "['a ) 38', 'b ) 27.675', 'c ) 1,200', 'd ) 31 / 36', 'e ) none of these']"
    for text in (plain, listed):
        values = [mathqa.option_value(o) for o in mathqa.parse_options(text)]
        assert values == [38.0, 27.675, 1200.0, pytest.approx(31 / 36), None]
    assert mathqa.option_value("2 : 3") == pytest.approx(2 / 3)
    assert mathqa.option_value("1 1 / 2") == pytest.approx(1.5)
    assert mathqa.nearest_option(29.0, (38.0, 27.675, None)) == 1
    assert mathqa.nearest_option(None, (38.0,)) is None


@pytest.mark.parametrize("content, message", [
    ("", "not valid JSON"),
    ("[]", "non-empty JSON list"),
    ('{"Problem": "x"}', "non-empty JSON list"),
    ('[{"Problem": "x", "answer": 1}]', "record 0 has no 'linear_formula'"),
    ('[{"Problem": "x", "linear_formula": "add(n0,n1)", "answer": 1}, 3]', "record 1 is not a JSON object"),
    ('[{"Problem": "x", "linear_formula": "add(n0,n1)", "answer": "one"}]', "record 0: 'answer'"),
])
def test_bad_files_are_one_clear_line(tmp_path, content, message):
    path = tmp_path / "dev.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message) as err:
        mathqa.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_splits_carve_validation_from_train_by_seed(shipped):
    cfg = mathqa.MathDataConfig(n_train=500, n_val=200, n_test=300, seed=3)
    splits, info = mathqa.splits(cfg)
    assert info["sizes"] == {"train": 500, "val": 200, "test": 300}
    assert splits["test"] == shipped["dev"][:300]
    val_problems = {r.problem + r.program for r in splits["val"]}
    assert not val_problems & {r.problem + r.program for r in splits["train"]}
    again, _ = mathqa.splits(cfg)
    assert again["val"] == splits["val"]
    other, _ = mathqa.splits(mathqa.MathDataConfig(n_train=500, n_val=200, seed=4))
    assert other["val"] != splits["val"]


def test_root_with_dev_and_test_uses_dev_as_validation(tmp_path):
    rec = {"Problem": "what is 2 plus 3 ?", "linear_formula": "add(n0,n1)|", "answer": 5}
    for name, n in (("train", 6), ("dev", 2), ("test", 3)):
        (tmp_path / f"{name}.json").write_text(json.dumps([rec] * n))
    splits, info = mathqa.splits(mathqa.MathDataConfig(root=str(tmp_path), n_val=1))
    assert info["sizes"] == {"train": 6, "val": 2, "test": 3}
    with pytest.raises(UsageError, match="no such folder"):
        mathqa.splits(mathqa.MathDataConfig(root=str(tmp_path / "missing")))


def test_data_check_cli(capsys, tmp_path):
    rec = {"Problem": "what is 2 plus 3 ?", "linear_formula": "add(n0,n1)|", "answer": 5}
    wrong = {**rec, "answer": 7}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([rec, wrong, rec]))
    assert main(["data", "check", "col775", "--file", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["mine"]
    assert (out["n"], out["reproduced"]) == (3, 2) and out["failures"][0]["index"] == 1
    assert main(["data", "check", "col775", "--file", str(path)]) == 0
    assert "2 / 3 gold programs" in capsys.readouterr().out
    assert main(["data", "check", "mathqa"]) == 2
    assert "--file" in capsys.readouterr().err
