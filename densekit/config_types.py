"""The value types of the typed config: ``Rule`` and its builders (``integer``, ``number``, ``list_of``, ...).

A rule is a test plus the words a failure prints after "expected", so a wrong value reads as

    data.size=abc: expected a list of 2 positive ints [H, W], got 'abc'

``densekit.config_rules`` says which key takes which rule; ``densekit.config_schema`` walks a config with them.
Pure Python (no torch, no Hydra): the check runs before the heavy imports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "MISSING",
    "NONNEG",
    "NONNEG_NUM",
    "PATH",
    "POS",
    "POS_NUM",
    "Rule",
    "boolean",
    "check_script_options",
    "check_value",
    "choice",
    "describe",
    "format_value",
    "int_list",
    "integer",
    "is_int",
    "is_num",
    "list_of",
    "mapping",
    "nullable",
    "number",
    "one_of",
    "pair",
    "prob",
    "select",
    "string",
]

MISSING = "???"  # OmegaConf's mandatory-value marker, as to_container(resolve=True) leaves it


# -- formatting ------------------------------------------------------------------------------------------
def format_value(value, limit: int = 60) -> str:
    """A value as one would write it on the command line: [64,64], null, true, abc."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = "[" + ",".join(format_value(v, limit) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {format_value(v, limit)}" for k, v in value.items()) + "}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value) -> str:
    """What was given, for the "got ..." part: strings quoted, lists with their length."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return f"{format_value(value)} ({len(value)} value{'s' if len(value) != 1 else ''})"
    return format_value(value)


def select(config: dict | None, path: str, default=None):
    """``config["a"]["b"]`` for ``path="a.b"`` in a plain nested dict; ``default`` where a part is missing."""
    node = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


# -- rules ----------------------------------------------------------------------------------------------
class Rule:
    """``test(value) -> bool`` with the text a failure prints after "expected"."""

    def __init__(self, expected: str, test: Callable[[Any], bool]):
        self.expected, self.test = expected, test

    def check(self, value) -> str | None:
        """None when ``value`` passes, else what was expected."""
        try:
            ok = bool(self.test(value))
        except (TypeError, ValueError):
            ok = False
        return None if ok else self.expected

    def __repr__(self) -> str:
        return f"Rule({self.expected!r})"


def check_value(key: str, value, rule: Rule) -> str | None:
    """The one-line failure for ``key=value`` under ``rule``, or None."""
    expected = rule.check(value)
    if expected is None:
        return None
    return f"{key}={format_value(value)}: expected {expected}, got {describe(value)}"


def check_script_options(
    config: dict, rules: dict[str, Rule], required: dict[str, str], text: Iterable[str], usage: str
) -> dict:
    """A script's options (scripts/export.py, scripts/predict.py: the plain config Hydra composed), checked:
    no key outside ``rules``; every ``required`` key given (``{key: placeholder}`` for the message
    ``missing ckpt=<path>``); the ``text`` keys (paths, devices) kept as text when Hydra read them as a
    boolean or a number (``output=17`` is a file called 17); then every rule, the first failure raised as a
    ``ConfigError`` that lists the other wrong keys. Returns the options."""
    from .errors import ConfigError

    unknown = sorted(set(config) - set(rules))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}; expected one of {sorted(rules)}\n{usage}")
    opts = dict(config)
    for key, placeholder in required.items():
        if opts.get(key) in (None, MISSING, ""):
            raise ConfigError(f"missing {key}=<{placeholder}>\n{usage}")
    for key in text:
        if isinstance(opts.get(key), (bool, int, float)):
            opts[key] = format_value(opts[key], limit=10**6)
    problems = [p for p in (check_value(k, opts.get(k), rule) for k, rule in rules.items()) if p]
    if problems:
        also = f" (also wrong: {', '.join(p.split('=', 1)[0] for p in problems[1:])})" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + also)
    return opts


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    return (is_int(v) or isinstance(v, float)) and not (isinstance(v, float) and math.isnan(v))


def _bounds_text(lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def integer(lo: int | None = None, hi: int | None = None, what: str | None = None) -> Rule:
    """An int (not a bool) in [lo, hi]."""
    if what is None:
        what = {1: "a positive int", 0: "an int >= 0"}.get(lo) if hi is None else None
        what = what or f"an int {_bounds_text(lo, hi)}".rstrip()
    return Rule(what, lambda v: is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi))


def number(gt=None, ge=None, lt=None, le=None, what: str | None = None) -> Rule:
    """An int or float (not a bool, not NaN) within the given bounds."""
    lo, lo_open = (gt, True) if gt is not None else (ge, False)
    hi, hi_open = (lt, True) if lt is not None else (le, False)
    what = what or f"a number {_bounds_text(lo, hi, lo_open, hi_open)}".rstrip()

    def test(v):
        if not is_num(v):
            return False
        return (gt is None or v > gt) and (ge is None or v >= ge) and (lt is None or v < lt) and (le is None or v <= le)

    return Rule(what, test)


def prob() -> Rule:
    return number(ge=0, le=1, what="a probability in [0, 1]")


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def string(what: str = "a string") -> Rule:
    return Rule(what, lambda v: isinstance(v, str) and v != "")


def choice(*values) -> Rule:
    shown = list(dict.fromkeys(format_value(v) for v in values))  # 16 and "16" read alike
    what = shown[0] if len(shown) == 1 else f"one of {', '.join(shown)}"
    return Rule(what, lambda v: any(v == c and type(v) is type(c) for c in values))


def nullable(rule: Rule) -> Rule:
    out = Rule(f"null or {rule.expected}", lambda v: v is None or rule.check(v) is None)
    out.inner = rule  # a nullable mapping's keys are still walked
    return out


def one_of(*rules: Rule) -> Rule:
    return Rule(" or ".join(r.expected for r in rules), lambda v: any(r.check(v) is None for r in rules))


def list_of(item: Rule, n: int | Iterable[int] | None = None, what: str | None = None, min_len: int = 0) -> Rule:
    """A list whose items pass ``item``; ``n``: the allowed length(s)."""
    lengths = None if n is None else ({n} if isinstance(n, int) else set(n))
    if what is None:
        count = "" if lengths is None else " or ".join(str(k) for k in sorted(lengths)) + " "
        plural = item.expected.removeprefix("a ").removeprefix("an ")
        plural = plural.replace("int", "ints", 1) if "int" in plural else plural + " values"
        what = f"a list of {count}{plural}"
    return Rule(
        what,
        lambda v: (
            isinstance(v, list)
            and (lengths is None or len(v) in lengths)
            and len(v) >= min_len
            and all(item.check(x) is None for x in v)
        ),
    )


def int_list(n: int | Iterable[int] | None = None, lo: int = 1, axes: str = "", min_len: int = 0) -> Rule:
    """A list of ``n`` ints >= ``lo`` (positive by default), e.g. ``int_list(2, axes="[H, W]")``."""
    kind = {1: "positive ints", 0: "ints >= 0"}.get(lo, f"ints >= {lo}")
    lengths = None if n is None else ({n} if isinstance(n, int) else set(n))
    count = "" if lengths is None else " or ".join(str(k) for k in sorted(lengths)) + " "
    what = f"a list of {count}{kind}" + (f" {axes}" if axes else "")
    return list_of(integer(lo), n, what=what, min_len=min_len)


def pair(item: Rule, ordered: bool = True, what: str | None = None) -> Rule:
    """[lo, hi]: two values passing ``item``, lo <= hi when ``ordered``."""
    what = what or f"[lo, hi]: two of {item.expected.removeprefix('a ').removeprefix('an ')}" + (
        " with lo <= hi" if ordered else ""
    )
    return Rule(
        what,
        lambda v: (
            isinstance(v, list)
            and len(v) == 2
            and all(item.check(x) is None for x in v)
            and (not ordered or v[0] <= v[1])
        ),
    )


def mapping(rules: dict[str, Rule] | None = None, what: str = "a mapping {key: value}") -> Rule:
    """A dict; ``rules`` (relative keys) are checked by ``config_schema``'s walk, not here."""
    rule = Rule(what, lambda v: isinstance(v, dict))
    rule.children = rules or {}
    return rule


# shorthands the rule tables share
POS = integer(1)
NONNEG = integer(0)
POS_NUM = number(gt=0, what="a number > 0")
NONNEG_NUM = number(ge=0, what="a number >= 0")
PATH = string("a path")
