from dataclasses import dataclass

import pytest

from syllabus.config import (
    apply_overrides,
    choice,
    from_dict,
    leaves,
    nested,
    parse_assignments,
    point_label,
    sweep_points,
    to_dict,
)
from syllabus.errors import UsageError


@dataclass
class Inner:
    lr: float = 0.1
    norm: str = choice("bn", ["bn", "gn"])
    sizes: tuple[int, ...] = (1, 2)
    flag: bool = False
    limit: int | None = None


@dataclass
class Outer:
    inner: Inner = nested(Inner)
    seed: int = 0
    name: str = "x"


def test_leaves_are_dotted():
    assert set(leaves(Outer)) == {"inner.lr", "inner.norm", "inner.sizes", "inner.flag", "inner.limit", "seed", "name"}


def test_overrides_parse_to_field_types():
    cfg = apply_overrides(Outer(), {"inner.lr": "1e-3", "seed": "7", "inner.sizes": "3,4,5",
                                    "inner.flag": "true", "inner.limit": "12", "inner.norm": "gn"})
    assert cfg.inner.lr == 1e-3 and cfg.seed == 7 and cfg.inner.sizes == (3, 4, 5)
    assert cfg.inner.flag is True and cfg.inner.limit == 12 and cfg.inner.norm == "gn"
    assert Outer().inner.lr == 0.1  # the original is untouched
    assert apply_overrides(Outer(), {"inner.limit": "none"}).inner.limit is None


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UsageError, match="unknown key 'inner.lrr'.*inner.lr"):
        apply_overrides(Outer(), {"inner.lrr": "1"})


@pytest.mark.parametrize("key,value,expected", [("seed", "abc", "int"), ("inner.lr", "fast", "float"),
                                                ("inner.flag", "maybe", "bool")])
def test_bad_type_names_key_and_type(key, value, expected):
    with pytest.raises(UsageError, match=f"{key}: expected {expected}"):
        apply_overrides(Outer(), {key: value})


def test_bad_choice_lists_choices():
    with pytest.raises(UsageError, match="choices: bn, gn"):
        apply_overrides(Outer(), {"inner.norm": "xyz"})


def test_sweep_points_are_a_product_and_validated():
    points = sweep_points(Outer(), {"inner.norm": "bn,gn", "seed": "1,2,3"})
    assert len(points) == 6 and points[0] == {"inner.norm": "bn", "seed": "1"}
    assert point_label(points[-1]) == "norm=gn,seed=3"
    with pytest.raises(UsageError, match="choices"):
        sweep_points(Outer(), {"inner.norm": "bn,xyz"})


def test_parse_assignments():
    assert parse_assignments(["a.b=1", "c = x=y"]) == {"a.b": "1", "c": "x=y"}
    with pytest.raises(UsageError, match="key=value"):
        parse_assignments(["novalue"])


def test_round_trip_through_dict():
    cfg = apply_overrides(Outer(), {"inner.sizes": "9,8", "name": "y"})
    assert from_dict(Outer, to_dict(cfg)) == cfg
    with pytest.raises(UsageError):
        from_dict(Outer, {"bogus": 1})
