"""Typed experiment configs: dataclasses, `--set a.b=c` overrides and `--sweep` points.

A config is a (nested) dataclass. Every leaf field is addressed by its dotted key
(`train.lr`, `model.norm`). Overrides arrive as text and are parsed to the field's
declared type; a field made with `choice(...)` accepts only its listed values.
Every mistake raises `UsageError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import types
import typing
from collections.abc import Iterable
from typing import Any

from syllabus.errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def choice(default: str, choices: Iterable[str]) -> Any:
    """A string field that only accepts `choices` (checked on every override)."""
    choices = tuple(choices)
    if default not in choices:
        raise ValueError(f"default {default!r} not among {choices}")
    return dataclasses.field(default=default, metadata={"choices": choices})


def ranged(default: float, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Any:
    """A number field accepting only finite values in [lo, hi] (an open end excludes the bound).

    `ranged(0.1, 0, lo_open=True)` is a positive number; `ranged(10, 1)` an integer of at least 1.
    """
    return dataclasses.field(default=default, metadata={"range": (lo, hi, lo_open, hi_open)})


def _range_text(rng: tuple) -> str:
    lo, hi, lo_open, hi_open = rng
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts) or "finite"


def _in_range(value: Any, rng: tuple | None) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if rng is None or value is None:
        return True
    lo, hi, lo_open, hi_open = rng
    if lo is not None and (value < lo or (lo_open and value == lo)):
        return False
    return not (hi is not None and (value > hi or (hi_open and value == hi)))


def nested(factory: type) -> Any:
    """A sub-config field (`data`, `model`, `train`) with its own defaults."""
    return dataclasses.field(default_factory=factory)


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One settable field: its dotted key, declared type and allowed values."""

    key: str
    type: Any
    choices: tuple[str, ...] | None
    range: tuple | None = None


def leaves(cfg_or_cls: Any, prefix: str = "") -> dict[str, Leaf]:
    """Every leaf field of a config class or instance, keyed by dotted name."""
    cls = cfg_or_cls if isinstance(cfg_or_cls, type) else type(cfg_or_cls)
    hints = typing.get_type_hints(cls)
    out: dict[str, Leaf] = {}
    for f in dataclasses.fields(cls):
        key, tp = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(leaves(tp, key + "."))
        else:
            out[key] = Leaf(key, tp, f.metadata.get("choices"), f.metadata.get("range"))
    return out


def get_value(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def parse_value(leaf: Leaf, text: str) -> Any:
    """Parse `text` to the leaf's type, or raise UsageError naming key and type."""
    try:
        value = _parse(leaf.type, text.strip())
    except (ValueError, TypeError):
        raise UsageError(
            f"bad value {text!r} for {leaf.key}: expected {_type_name(leaf.type)}"
        ) from None
    if leaf.choices is not None and value not in leaf.choices:
        raise UsageError(
            f"bad value {text!r} for {leaf.key}; choices: {', '.join(leaf.choices)}"
        )
    _check_range(leaf, value)
    return value


def _check_range(leaf: Leaf, value: Any) -> None:
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not _in_range(v, leaf.range):
            need = _range_text(leaf.range) if leaf.range else "a finite number"
            raise UsageError(f"bad value {v!r} for {leaf.key}: must be {need}")


def _parse(tp: Any, text: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse(inner[0], text)
    if origin is typing.Literal:
        for a in args:
            if str(a) == text:
                return a
        raise ValueError(text)
    if origin in (tuple, list):
        elem = args[0] if args else str
        parts = [p for p in text.strip("()[]").split(",") if p.strip()]
        return origin(_parse(elem, p.strip()) for p in parts)
    if tp is bool:
        low = text.lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError(text)
    if tp in (int, float, str):
        return tp(text)
    raise TypeError(f"unsupported config type {tp}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (tuple, list):
        return f"comma-separated {_type_name(typing.get_args(tp)[0])}s"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def apply_overrides(cfg: Any, overrides: dict[str, str]) -> Any:
    """A copy of `cfg` with each dotted key set to its parsed value."""
    valid = leaves(cfg)
    for key, text in overrides.items():
        if key not in valid:
            raise UsageError(f"unknown key {key!r}; valid keys: {', '.join(valid)}")
        cfg = _replace(cfg, key.split("."), parse_value(valid[key], text))
    check_choices(cfg)
    return cfg


def _replace(cfg: Any, path: list[str], value: Any) -> Any:
    if len(path) == 1:
        return dataclasses.replace(cfg, **{path[0]: value})
    child = _replace(getattr(cfg, path[0]), path[1:], value)
    return dataclasses.replace(cfg, **{path[0]: child})


def check_choices(cfg: Any) -> None:
    """Raise UsageError if any field holds a value outside its choices or its range."""
    for leaf in leaves(cfg).values():
        value = get_value(cfg, leaf.key)
        if leaf.choices is not None and value not in leaf.choices:
            raise UsageError(f"bad value {value!r} for {leaf.key}; choices: {', '.join(leaf.choices)}")
        _check_range(leaf, value)


def parse_assignments(items: Iterable[str], what: str = "--set") -> dict[str, str]:
    """`["a.b=1", "c=x"]` -> `{"a.b": "1", "c": "x"}`.

    A key given twice with different values is refused for `--set`; for `--sweep` the value
    lists are merged (`--sweep k=a --sweep k=b` is `--sweep k=a,b`).
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise UsageError(f"{what} expects key=value, got {item!r}")
        if key in out and out[key] != value:
            if what != "--sweep":
                raise UsageError(f"{what} {key} given twice ({out[key]!r} and {value!r}); give it once")
            merged = [v.strip() for v in f"{out[key]},{value}".split(",") if v.strip()]
            value = ",".join(dict.fromkeys(merged))
        out[key] = value
    return out


def sweep_points(cfg: Any, sweeps: dict[str, str]) -> list[dict[str, str]]:
    """The cartesian product of `--sweep key=v1,v2` values, each point validated on `cfg`."""
    axes = []
    for key, values in sweeps.items():
        options = [v.strip() for v in values.split(",") if v.strip()]
        if not options:
            raise UsageError(f"--sweep {key}= has no values")
        axes.append([(key, v) for v in options])
    points = [dict(combo) for combo in itertools.product(*axes)]
    for point in points:
        apply_overrides(cfg, point)
    return points


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,+-]+")


def point_label(point: dict[str, str]) -> str:
    """`{"model.norm": "bn", "train.batch_size": "8"}` -> `norm=bn,batch_size=8`.

    The label names a directory: anything but letters, digits and `_.=,+-` becomes `_`, and a
    leading dot is dropped, so a value such as `../../x` cannot leave the sweep's folder.
    """
    text = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items())
    return _UNSAFE.sub("_", text).lstrip(".")[:120] or "point"


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config saved by `to_dict`; unknown keys are an error, missing keep defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UsageError(f"saved config has unknown keys {sorted(unknown)} for {cls.__name__}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            value = from_dict(tp, value)
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
