"""MathQA-style problems: the COL775 splits shipped with the package, and MathQA JSON files.

`col775`: JSON lists of `{Problem, linear_formula, answer}`. The complete COL775 training split
(19,791 records) and its dev split (2,961) ship in `syllabus/data/col775/` (xz-compressed, with
MathQA's Apache-2.0 notice); `data.root=DIR` reads `DIR/{train,dev,test}.json` instead, any
subset present. `mathqa`: the original MathQA JSON (Problem, Rationale, options, correct,
annotated_formula, linear_formula, category); a program is right when its value is nearest
the correct option.

Splits: train is the training file minus a validation slice of `n_val` records carved by
`data.seed`; test is `test.json` when present, else the dev file; with both, dev is val.
"""

from __future__ import annotations

import ast
import functools
import json
import lzma
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from syllabus.config import choice, ranged
from syllabus.errors import UsageError
from syllabus.programs.language import NUMBER, THOUSANDS_COMMA

SHIPPED = Path(__file__).parent / "col775"
FILES = ("train", "dev", "test")
COL775_FIELDS = ("Problem", "linear_formula", "answer")
MATHQA_FIELDS = ("Problem", "options", "correct", "linear_formula")
LETTERS = "abcde"


@dataclass
class MathDataConfig:
    """`data.*` of math-programs."""

    name: str = choice("col775", ["col775", "mathqa"])
    root: str = ""  # folder with {train,dev,test}.json; empty = the COL775 splits shipped with the package
    n_train: int = ranged(0, 0)  # 0 = every training record left after the validation slice
    n_val: int = ranged(1000, 1)  # validation slice carved from train (unless dev.json and test.json both exist)
    n_test: int = ranged(0, 0)  # 0 = the whole test file
    seed: int = 0  # the carving seed


@dataclass(frozen=True)
class MathRecord:
    """One problem. `answer` (COL775) or `options` + `correct` (MathQA) say what is right.

    `raw` is the record as read, written back with `"predicted"` by `syllabus predict`.
    """

    problem: str
    program: str
    answer: float | None = None
    options: tuple[float | None, ...] = ()
    correct: int | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)


def read_records(path: Path, text: str | None = None) -> list[dict]:
    """A JSON list of objects, or UsageError naming the file and what is wrong."""
    try:
        data = json.loads(text if text is not None else Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, list) or not data:
        raise UsageError(f"{path}: expected a non-empty JSON list of records")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise UsageError(f"{path}: record {i} is not a JSON object")
    return data


def _field(path: Path, i: int, rec: dict, key: str, kind: type | tuple) -> object:
    if key not in rec:
        raise UsageError(f"{path}: record {i} has no {key!r} field")
    value = rec[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UsageError(f"{path}: record {i}: {key!r} is {type(value).__name__}, not the expected type")
    return value


def col775_records(path: Path, data: list[dict]) -> list[MathRecord]:
    out = []
    for i, rec in enumerate(data):
        problem = _field(path, i, rec, "Problem", str)
        program = _field(path, i, rec, "linear_formula", str)
        answer = _field(path, i, rec, "answer", (int, float))
        out.append(MathRecord(problem, program, answer=float(answer), raw=rec))
    return out


def mathqa_records(path: Path, data: list[dict]) -> list[MathRecord]:
    out = []
    for i, rec in enumerate(data):
        problem = _field(path, i, rec, "Problem", str)
        program = _field(path, i, rec, "linear_formula", str)
        options = _field(path, i, rec, "options", (str, list))
        correct = _field(path, i, rec, "correct", str).strip().lower()
        if correct not in LETTERS:
            raise UsageError(f"{path}: record {i}: 'correct' is {correct!r}, not one of a-e")
        values = tuple(option_value(t) for t in parse_options(options))
        out.append(MathRecord(problem, program, options=values, correct=LETTERS.index(correct), raw=rec))
    return out


def load(path: Path, name: str = "col775") -> list[MathRecord]:
    """Records of a `col775` or `mathqa` JSON file (`.json` or `.json.xz`)."""
    path = Path(path)
    text = None
    if path.suffix == ".xz":
        try:
            text = lzma.decompress(path.read_bytes()).decode("utf-8")
        except (OSError, lzma.LZMAError, UnicodeDecodeError) as e:
            raise UsageError(f"{path}: cannot read ({e})") from None
    data = read_records(path, text)
    return mathqa_records(path, data) if name == "mathqa" else col775_records(path, data)


def shipped(split: str) -> list[MathRecord]:
    """The COL775 `train` or `dev` split shipped with the package (read once per process)."""
    return list(_shipped(split))


@functools.cache
def _shipped(split: str) -> tuple[MathRecord, ...]:
    return tuple(load(SHIPPED / f"{split}.json.xz"))


def load_any(path: Path, name: str) -> list[MathRecord]:
    """`load`, through the per-process cache for the shipped files."""
    path = Path(path)
    if path.parent == SHIPPED and path.name.endswith(".json.xz") and name == "col775":
        return shipped(path.name.split(".")[0])
    return load(path, name)


# ---- MathQA options -------------------------------------------------------------------------

_OPTION = re.compile(r"(?:^|,)\s*([a-e])\s*\)\s*(.*?)\s*(?=,\s*[a-e]\s*\)|$)")


def parse_options(options: str | list) -> list[str]:
    """The five option texts, from `"a ) 38 , b ) 27.675 , ..."` or a (string of a) Python list."""
    if isinstance(options, str) and options.strip().startswith("["):
        try:
            options = ast.literal_eval(options.strip())  # a literal, never code
        except (ValueError, SyntaxError):
            return []
    if isinstance(options, list):
        return [re.sub(r"^\s*[a-e]\s*\)\s*", "", str(o)) for o in options]
    return [m.group(2) for m in _OPTION.finditer(options)]


def option_value(text: str) -> float | None:
    """The number an option states: `31 / 36`, `2 : 3` (a ratio), `rs . 1,200`, `5 %`; else None."""
    text = THOUSANDS_COMMA.sub("", text)
    nums = [float(m.group()) for m in NUMBER.finditer(text)]
    if not nums:
        return None
    ratio = re.search(r"([-+]?\d*\.?\d+)\s*[/:]\s*([-+]?\d*\.?\d+)", text)
    if ratio and float(ratio.group(2)) != 0:
        whole = re.match(r"\s*(\d+)\s+\d+\s*/", text)  # a mixed number: 1 1 / 2
        frac = float(ratio.group(1)) / float(ratio.group(2))
        return float(whole.group(1)) + frac if whole else frac
    return nums[0]


def nearest_option(value: float | None, options: tuple[float | None, ...]) -> int | None:
    """Index of the option nearest `value` (None when there is no value or no numeric option)."""
    if value is None:
        return None
    scored = [(abs(value - v), i) for i, v in enumerate(options) if v is not None]
    return min(scored)[1] if scored else None


# ---- splits --------------------------------------------------------------------------------

def files(cfg: MathDataConfig) -> dict[str, Path]:
    """The files `cfg` reads: root's {train,dev,test}.json present, else the shipped splits."""
    if not cfg.root:
        if cfg.name == "mathqa":
            raise UsageError("data.name=mathqa needs the MathQA JSON files: --set data.root=DIR with "
                             "DIR/{train,dev,test}.json from https://math-qa.github.io/")
        return {s: SHIPPED / f"{s}.json.xz" for s in ("train", "dev")}
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise UsageError(f"data.root={cfg.root}: no such folder (expected {{train,dev,test}}.json in it)")
    found = {s: root / f"{s}.json" for s in FILES if (root / f"{s}.json").is_file()}
    if not found:
        raise UsageError(f"data.root={cfg.root}: no train.json, dev.json or test.json in it")
    if "train" not in found and cfg.name == "col775":
        found["train"] = SHIPPED / "train.json.xz"
    return found


def splits(cfg: MathDataConfig) -> tuple[dict[str, list[MathRecord]], dict]:
    """train/val/test records and how they were made (for the summary)."""
    paths = files(cfg)
    if "train" not in paths:
        raise UsageError(f"data.root={cfg.root}: no train.json (data.name=mathqa ships no training split)")
    train = load_any(paths["train"], cfg.name)
    if "test" in paths and "dev" in paths:
        val, test = load_any(paths["dev"], cfg.name), load_any(paths["test"], cfg.name)
    else:
        test_path = paths.get("test", paths.get("dev"))
        if test_path is None:
            raise UsageError(f"data.root={cfg.root}: no dev.json or test.json to test on")
        test = load_any(test_path, cfg.name)
        if cfg.n_val >= len(train):
            raise UsageError(f"data.n_val={cfg.n_val} leaves no training records (train has {len(train)})")
        order = np.random.default_rng(cfg.seed).permutation(len(train))
        val, train = [train[i] for i in order[:cfg.n_val]], [train[i] for i in order[cfg.n_val:]]
    train = train[:cfg.n_train] if cfg.n_train else train
    test = test[:cfg.n_test] if cfg.n_test else test
    out = {"train": train, "val": val, "test": test}
    info = {"dataset": cfg.name, "files": {k: str(v) for k, v in paths.items()}, "seed": cfg.seed,
            "sizes": {k: len(v) for k, v in out.items()}}
    return out, info
