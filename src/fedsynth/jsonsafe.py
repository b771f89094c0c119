"""The one check for JSON values that cross a trust boundary (cards, federation definitions,
round specs): finite floats, bounded integers, strings without lone surrogates or NUL.

Python's ``json`` accepts all of these, but each breaks something further in: a 400-digit
integer overflows every float conversion and database column, ``NaN``/``Infinity`` are not
standard JSON (PostgreSQL refuses them, other readers choke), a lone surrogate cannot be encoded
as UTF-8 (SQLite, every response), and PostgreSQL text/JSON cannot hold NUL. Refusing them here,
with the field's path in the message, turns each into a 422 instead of a 500 somewhere else.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Integers beyond a signed 64-bit one are refused: what SQLite and PostgreSQL integer columns
#: hold, what a spec's 64-bit seed needs, and far from float overflow.
MAX_INT = 2**63 - 1
MAX_DEPTH = 64


class JSONValueError(ValueError):
    """A JSON value that fedsynth refuses; the message names the field (``where``)."""


def check_str(s: str, where: str) -> str:
    if "\x00" in s:
        raise JSONValueError(f"{where}: contains a NUL character")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise JSONValueError(f"{where}: is not valid Unicode (lone surrogate)") from None
    return s


def check_number(v: int | float, where: str) -> int | float:
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        if abs(v) > MAX_INT:
            raise JSONValueError(f"{where}: out-of-range integer (|n| > 2**63 - 1)")
        return v
    if not math.isfinite(v):
        raise JSONValueError(f"{where}: must be a finite number, got {v}")
    return v


def check_json(v: Any, where: str, _depth: int = 0) -> Any:
    """Raise :class:`JSONValueError` naming the path (``where.key[3]``) of the first bad value."""
    if _depth > MAX_DEPTH:
        raise JSONValueError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(v, str):
        check_str(v, where)
    elif isinstance(v, int | float):
        check_number(v, where)
    elif isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise JSONValueError(f"{where}: object keys must be strings")
            check_str(k, f"{where} (a key)")
            check_json(x, f"{where}.{ascii(k)[1:-1]}", _depth + 1)
    elif isinstance(v, list | tuple):
        for i, x in enumerate(v):
            check_json(x, f"{where}[{i}]", _depth + 1)
    elif v is not None:
        raise JSONValueError(f"{where}: {type(v).__name__} is not a JSON value")
    return v


def _int(s: str) -> int:
    # int() refuses > 4300 digits with a message naming no field; below that, parse and let
    # check_json refuse it with its path (NaN/Infinity/1e400 likewise parse, then get refused)
    if len(s) > 4000:
        raise JSONValueError(f"an out-of-range integer ({len(s)} digits)")
    return int(s)


def loads(text: str | bytes, where: str) -> Any:
    """``json.loads`` that refuses what :func:`check_json` refuses (``NaN``, ``1e400``, huge
    integers, lone surrogates, NUL). Raises :class:`JSONValueError` (invalid JSON included)."""
    try:
        v = json.loads(text, parse_int=_int)
    except JSONValueError as e:
        raise JSONValueError(f"{where}: {e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise JSONValueError(f"{where}: not valid JSON: {e}") from None
    return check_json(v, where)


__all__ = ["MAX_INT", "JSONValueError", "check_json", "check_number", "check_str", "loads"]
