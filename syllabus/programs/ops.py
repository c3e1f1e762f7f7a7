"""The MathQA operations: name -> arity and a pure function on floats.

Every operation of MathQA's `operation_list.txt` plus `choose`. Conventions that agree with
the data (see `../shared/data/README.md`): `log` is base 2, `volume_cube(x)` is x^3,
`stream_speed(a, b)` is (a + b) / 2, `p_after_gain(a, b)` is a / b; factorial, choose,
combination, permutation, gcd and lcm work on whole numbers (a fraction is truncated, as the
data's answers assume), `reminder` is Python's `%`. Angles of `sine`, `cosine`, `tangent` are
radians; circle arcs and sectors take degrees.

Values are floats, or exact ints where whole-number operations make them (`39!` mod 41 is 1
only in exact arithmetic). The interpreter caps every value at the float range, so an int
never grows past about 1024 bits. A function signals an input it cannot take by raising
`ProgramError` with the reason. The expensive operations are guarded by size limits (never
by wall-clock time, so a score does not depend on the machine).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

MAX_FACTORIAL = 170  # 171! overflows a float
MAX_COMB_N = 10_000  # comb(n, k) of larger n is beyond a float for most k and slow to compute exactly
MAX_EXACT_POWER_BITS = 1100  # whole-number powers up to this size are computed exactly


class ProgramError(Exception):
    """A program that cannot be run: the message is the reason, for the report."""


@dataclass(frozen=True)
class Operation:
    name: str
    arity: int
    fn: Callable[..., float]


OPERATIONS: dict[str, Operation] = {}


def op(name: str, arity: int) -> Callable[[Callable[..., float]], Callable[..., float]]:
    def add(fn: Callable[..., float]) -> Callable[..., float]:
        OPERATIONS[name] = Operation(name, arity, fn)
        return fn

    return add


def define(name: str, arity: int, fn: Callable[..., float]) -> None:
    op(name, arity)(fn)


def whole(x: float | int, what: str) -> int:
    """`x` truncated to an int (factorial(2.1) is 2!, as the data's answers assume)."""
    if isinstance(x, int):
        return x
    if not math.isfinite(x):
        raise ProgramError(f"{what} of {x}")
    return int(x)


def is_whole(x: float | int) -> bool:
    return isinstance(x, int) or (math.isfinite(x) and x == math.floor(x))


def divide(a: float, b: float) -> float:
    if b == 0:
        raise ProgramError("division by zero")
    return a / b


def sqrt(x: float) -> float:
    if x < 0:
        raise ProgramError(f"square root of a negative number {x:g}")
    return math.sqrt(x)


def power(a: float | int, b: float | int) -> float | int:
    if a == 0 and b < 0:
        raise ProgramError("zero to a negative power")
    if a < 0 and not is_whole(b):
        raise ProgramError(f"negative number {a:g} to a fractional power {b:g}")
    if is_whole(a) and is_whole(b) and b >= 0 and abs(a) > 1 and b * math.log2(abs(a)) <= MAX_EXACT_POWER_BITS:
        return int(a) ** int(b)  # exact, at most MAX_EXACT_POWER_BITS bits
    return math.pow(a, b)  # float arithmetic: OverflowError at once, never a huge integer


# arithmetic
define("add", 2, lambda a, b: a + b)
define("subtract", 2, lambda a, b: a - b)
define("multiply", 2, lambda a, b: a * b)
define("divide", 2, divide)
define("power", 2, power)
define("sqrt", 1, sqrt)
define("negate", 1, lambda a: -a)
define("inverse", 1, lambda a: divide(1.0, a))
define("max", 2, max)
define("min", 2, min)
define("round", 1, round)
define("floor", 1, math.floor)


@op("log", 1)
def log2(x: float) -> float:
    if x <= 0:
        raise ProgramError(f"log of a non-positive number {x:g}")
    return math.log2(x)


# whole numbers
@op("factorial", 1)
def factorial(x: float | int) -> int:
    n = whole(x, "factorial")
    if not 0 <= n <= MAX_FACTORIAL:
        raise ProgramError(f"factorial of {n} (limit 0..{MAX_FACTORIAL})")
    return math.factorial(n)


def _n_k(n: float | int, k: float | int, what: str) -> tuple[int, int]:
    n, k = whole(n, what), whole(k, what)
    if not (0 <= k and 0 <= n <= MAX_COMB_N):
        raise ProgramError(f"{what}({n}, {k}) outside 0 <= k, 0 <= n <= {MAX_COMB_N}")
    return n, k


def choose(n: float | int, k: float | int) -> int:
    return math.comb(*_n_k(n, k, "choose"))


@op("permutation", 2)
def permutation(n: float | int, k: float | int) -> int:
    return math.perm(*_n_k(n, k, "permutation"))


define("choose", 2, choose)
define("combination", 2, choose)
define("gcd", 2, lambda a, b: math.gcd(whole(a, "gcd"), whole(b, "gcd")))
define("lcm", 2, lambda a, b: math.lcm(whole(a, "lcm"), whole(b, "lcm")))


@op("reminder", 2)
def reminder(a: float | int, b: float | int) -> float | int:
    if b == 0:
        raise ProgramError("reminder by zero")
    if is_whole(a) and is_whole(b):
        return int(a) % int(b)  # exact: 39! mod 41 is 1
    return a % b


# angles
define("sine", 1, math.sin)
define("cosine", 1, math.cos)
define("tangent", 1, math.tan)
define("radians_to_degree", 1, math.degrees)
define("degree_to_radians", 1, math.radians)

# geometry
define("circle_area", 1, lambda r: math.pi * r * r)
define("circumface", 1, lambda r: 2 * math.pi * r)
define("circle_arc", 2, lambda r, deg: 2 * math.pi * r * deg / 360)
define("semi_circle_perimiter", 1, lambda r: math.pi * r + 2 * r)
define("circle_sector_area", 2, lambda r, deg: math.pi * r * r * deg / 360)
define("rectangle_perimeter", 2, lambda a, b: 2 * (a + b))
define("rectangle_area", 2, lambda a, b: a * b)
define("square_perimeter", 1, lambda a: 4 * a)
define("square_area", 1, lambda a: a * a)
define("trapezium_area", 3, lambda a, b, h: (a + b) * h / 2)
define("rhombus_perimeter", 1, lambda a: 4 * a)
define("rhombus_area", 2, lambda d1, d2: d1 * d2 / 2)
define("quadrilateral_area", 3, lambda d, h1, h2: d * (h1 + h2) / 2)
define("volume_cone", 2, lambda r, h: math.pi * r * r * h / 3)
define("volume_rectangular_prism", 3, lambda a, b, c: a * b * c)
define("volume_cube", 1, lambda a: a**3)
define("volume_sphere", 1, lambda r: 4 / 3 * math.pi * r**3)
define("volume_cylinder", 2, lambda r, h: math.pi * r * r * h)
define("surface_cone", 2, lambda r, slant: math.pi * r * (r + slant))
define("surface_cylinder", 2, lambda r, h: 2 * math.pi * r * (r + h))
define("surface_cube", 1, lambda a: 6 * a * a)
define("surface_rectangular_prism", 3, lambda a, b, c: 2 * (a * b + b * c + c * a))
define("surface_sphere", 1, lambda r: 4 * math.pi * r * r)
define("side_by_diagonal", 1, lambda d: d / math.sqrt(2))
define("cube_edge_by_volume", 1, lambda v: math.copysign(abs(v) ** (1 / 3), v))
define("diagonal", 2, lambda a, b: math.hypot(a, b))
define("square_edge_by_perimeter", 1, lambda p: p / 4)
define("square_edge_by_area", 1, sqrt)
define("triangle_perimeter", 3, lambda a, b, c: a + b + c)
define("triangle_area", 2, lambda b, h: b * h / 2)


@op("triangle_area_three_edges", 3)
def heron(a: float, b: float, c: float) -> float:
    s = (a + b + c) / 2
    return sqrt(s * (s - a) * (s - b) * (s - c))


# counting and probability
define("sum_consecutive_number", 1, lambda n: n * (n + 1) / 2)
define("count_interval", 2, lambda a, b: b - a + 1)
define("union_prob", 3, lambda a, b, both: a + b - both)
define("negate_prob", 1, lambda p: 1 - p)

# percentages and prices (rate first, then the price, as the data writes them)
define("percent", 2, lambda rate, x: rate * x / 100)
define("from_percent", 1, lambda rate: rate / 100)
define("to_percent", 1, lambda x: x * 100)
define("negate_percent", 1, lambda rate: 100 - rate)
define("gain_percent", 2, lambda cost, sell: divide(sell - cost, cost) * 100)
define("loss_percent", 2, lambda cost, sell: divide(cost - sell, cost) * 100)
# the one reading that gives the data's answers ("what percent of x is x percent of 1" -> 1)
define("p_after_gain", 2, divide)
define("p_after_loss", 2, lambda rate, price: price * (1 - rate / 100))
define("price_after_gain", 2, lambda rate, price: price * (1 + rate / 100))
define("price_after_loss", 2, lambda rate, price: price * (1 - rate / 100))
define("original_price_before_gain", 2, lambda rate, price: divide(price * 100, 100 + rate))
define("original_price_before_loss", 2, lambda rate, price: divide(price * 100, 100 - rate))

# motion and work
define("speed", 2, divide)
define("combined_work", 2, lambda t1, t2: divide(t1 * t2, t1 + t2))
define("find_work", 2, lambda together, t1: divide(together * t1, t1 - together))
define("speed_ratio_steel_to_stream", 2, lambda down, up: divide(down + up, down - up))
define("speed_in_still_water", 2, lambda down, up: (down + up) / 2)
define("stream_speed", 2, lambda a, b: (a + b) / 2)
