"""The MathQA program language: numbers, constants, tokens, parser, operations, interpreter."""

import math

import numpy as np
import pytest
import scipy.special
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syllabus.programs import OPERATIONS, execute, extract_numbers, parse, program_tokens, solve, tokens_to_text
from syllabus.programs.language import constant_value, number_spans
from syllabus.programs.vocab import ProgramVocab


def test_numbers_follow_the_course_regex_after_thousands_commas():
    text = "a sum of rs . 1,200 at 4.5 % for .5 years and - 3 , 7 or -2 or -2.5"
    # the sign belongs to the decimal branch only: `[-+]?\d*\.\d+|\d+`
    assert extract_numbers(text) == [1200.0, 4.5, 0.5, 3.0, 7.0, 2.0, -2.5]
    spans = number_spans(text)
    assert [text[s:e] for _, s, e in spans] == ["1,200", "4.5", ".5", "3", "7", "2", "-2.5"]


def test_constants():
    assert constant_value("const_100") == 100.0
    assert constant_value("const_0_25") == 0.25
    assert constant_value("const_2.0") == 2.0
    assert constant_value("const_pi") == math.pi
    assert constant_value("const_0_2778") == 0.2778
    assert not execute("add(const_x,n0)", [1.0]).valid


def test_tokens_round_trip_and_ignore_punctuation():
    text = "divide(n0,const_100)|add(#0,const_1)|"
    assert program_tokens(text) == ["divide", "n0", "const_100", "|", "add", "#0", "const_1", "|"]
    assert tokens_to_text(program_tokens(text)) == text
    assert tokens_to_text(program_tokens(text.rstrip("|"))) == text.rstrip("|")
    assert program_tokens("add(n1|subtract(") == ["add", "n1", "|", "subtract"]


def test_vocab_encodes_and_decodes():
    vocab = ProgramVocab()
    ids = vocab.encode("power(n1,n0)|")
    assert ids[-1] == vocab.eos and vocab.decode(ids) == "power(n1,n0)|"
    assert vocab.unk in vocab.encode("add(n99,n0)")


@pytest.mark.parametrize("program, numbers, value", [
    ("add(n0,n1)|multiply(#0,const_2)|", [3, 4], 14.0),
    ("divide(n0,const_100)|add(#0,const_1)|power(#1,n1)", [10, 2], 1.21),
    ("log(n0)", [8], 3.0),  # base 2
    ("stream_speed(n0,n1)", [19, 9], 14.0),  # (a + b) / 2, as the data
    ("p_after_gain(n1,n0)", [14, 14], 1.0),  # "what percent of 14 is 14 percent of 1"
    ("volume_cube(n0)", [3], 27.0),
    ("factorial(n0)|reminder(#0,n1)", [39, 41], 1.0),  # exact: Wilson's theorem, 40! = -1 mod 41
    ("power(n0,n1)|reminder(#0,n2)", [6, 23, 5], 1.0),
    ("triangle_area_three_edges(n0,n1,n2)", [3, 4, 5], 6.0),
    ("surface_cylinder(n0,n1)", [8, 3], 2 * math.pi * 8 * 11),
    ("choose(n0,n1)|permutation(n0,n1)|divide(#1,#0)", [10, 3], 6.0),
    ("factorial(n0)", [2.5], 2.0),  # fractions truncated, as the data's answers assume
])
def test_operations_give_the_datas_values(program, numbers, value):
    run = execute(program, [float(n) for n in numbers])
    assert run.valid, run.error
    assert run.value == pytest.approx(value)


def test_whole_number_operations_match_scipy_and_numpy():
    rng = np.random.default_rng(0)
    for n, k in rng.integers(0, 60, size=(20, 2)):
        n, k = int(max(n, k)), int(min(n, k))
        assert OPERATIONS["choose"].fn(float(n), float(k)) == scipy.special.comb(n, k, exact=True)
        assert OPERATIONS["permutation"].fn(float(n), float(k)) == scipy.special.perm(n, k, exact=True)
        assert OPERATIONS["gcd"].fn(float(n), float(k)) == np.gcd(n, k)
        assert OPERATIONS["lcm"].fn(float(n), float(k)) == np.lcm(n, k)


@pytest.mark.parametrize("program, numbers, reason", [
    ("", [], "empty"),
    ("add(n0,n1", [1, 2], "not op(args)"),
    ("add(n0)", [1], "takes 2"),
    ("plus(n0,n1)", [1, 2], "unknown operation"),
    ("add(n0,n3)", [1, 2], "n3 but the problem has 2"),
    ("add(#1,n0)|add(#0,n0)", [1], "before it is computed"),
    ("divide(n0,n1)", [1, 0], "division by zero"),
    ("sqrt(n0)", [-4], "negative"),
    ("log(n0)", [0], "non-positive"),
    ("power(n0,n1)", [10, 1e6], "overflow"),
    ("power(n0,n1)", [-8, 0.5], "fractional power"),
    ("factorial(n0)", [1e6], "limit"),
    ("choose(n0,n1)", [1e9, 3], "choose"),
    ("power(n0,n1)|power(#0,#0)", [10, 300], "overflow"),
    ("factorial(n0)|multiply(#0,#0)|multiply(#1,#1)", [170], "overflows"),
    ("add(n0,n1)||add(#0,n0)", [1, 2], "empty"),
])
def test_invalid_programs_come_back_with_their_reason(program, numbers, reason):
    run = execute(program, [float(n) for n in numbers])
    assert run.value is None and not run.valid
    assert reason in run.error


def test_parse_allows_one_trailing_separator_only():
    assert len(parse("add(n0,n1)|")) == 1
    assert not execute("add(n0,n1)||", [1.0, 2.0]).valid


# ---- fuzzing: nothing escapes the interpreter ---------------------------------------------

NAMES = sorted(OPERATIONS)
ARGS = ["n0", "n1", "n2", "n7", "#0", "#1", "#5", "const_100", "const_0_25", "const_pi", "const_2.0", "x", ""]
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
numbers_st = st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                st.integers(-10**6, 10**6).map(float), st.sampled_from([0.0, 1.0, 170.0, 1e308])),
                      max_size=4)


@FUZZ
@given(st.lists(st.sampled_from([*NAMES, *ARGS, "(", ")", ",", "|", " "]), max_size=30), numbers_st)
def test_random_token_strings_never_raise(tokens, numbers):
    run = execute("".join(tokens), numbers)
    assert run.valid == (run.error is None)
    assert run.value is None or math.isfinite(run.value)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="adn0#|(),_c1. ", max_size=60), numbers_st)
def test_random_text_never_raises(text, numbers):
    assert execute(text, numbers).valid in (True, False)


@st.composite
def operation_trees(draw):
    """A well-formed program over the numbers drawn with it: known ops, right arity, earlier refs."""
    numbers = draw(numbers_st.filter(bool))
    steps = []
    for k in range(draw(st.integers(1, 6))):
        name = draw(st.sampled_from(NAMES))
        pool = [f"n{i}" for i in range(len(numbers))] + [f"#{j}" for j in range(k)] + ["const_2", "const_100"]
        steps.append(f"{name}({','.join(draw(st.sampled_from(pool)) for _ in range(OPERATIONS[name].arity))})")
    return "|".join(steps), numbers


@FUZZ
@given(operation_trees())
def test_random_operation_trees_parse_and_run_or_say_why(tree):
    program, numbers = tree
    assert len(parse(program)) == program.count("|") + 1  # well formed: never a parse failure
    run = execute(program, numbers)
    if run.valid:
        assert math.isfinite(run.value)
    else:
        assert run.error.startswith("step ")  # the reason names the step


def test_solve_reads_the_numbers_of_the_problem():
    problem = "a train 150 m long passes a pole in 15 sec . its speed in km / hr is"
    assert solve(problem, "divide(n0,n1)|multiply(#0,const_3_6)").value == pytest.approx(36.0)
