"""Strict parsing of the hub's answers (the client half of "verify, don't trust").

Every answer is parsed with no non-finite numbers, no integer beyond :data:`fedsynth.jsonsafe.MAX_INT`
(the limit the hub applies to what it accepts: one limit on both sides) and no lone surrogate, and
each field a client reads is checked for presence and type (:func:`obj`, :func:`array`,
:func:`field`); a malformed answer raises :class:`HubAnswerError` naming the field.
:class:`HubError` is a refusal (HTTP ≥ 400).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fedsynth.exchange.protocol import NAME_RE
from fedsynth.jsonsafe import MAX_INT


class HubError(RuntimeError):
    """The hub answered with an error; ``status`` is the HTTP status, the message its reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"hub refused ({status}): {detail}")
        self.status = status
        self.detail = detail


class HubAnswerError(HubError):
    """The hub's answer is malformed (not JSON, a non-finite or oversized number, a lone
    surrogate, a missing or mistyped field); the message names the field."""

    def __init__(self, detail: str, status: int = 200) -> None:
        RuntimeError.__init__(self, f"malformed hub answer: {detail}")
        self.status = status
        self.detail = detail


# an integer with more digits than MAX_INT is refused before int() parses it (a 400-digit one is
# hostile); one with as many is parsed and compared with MAX_INT
_MAX_INT_DIGITS = len(str(MAX_INT))
_HEX64 = re.compile(r"[0-9a-f]{64}")


class _Bad:
    """A JSON value refused while parsing; reported with its path once the tree is built."""

    def __init__(self, why: str) -> None:
        self.why = why


def _parse_int(t: str) -> int | _Bad:
    digits = len(t.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        return _Bad(f"an integer of {digits} digits")
    v = int(t)
    return v if abs(v) <= MAX_INT else _Bad("an out-of-range integer (|n| > 2**63 - 1)")


def _parse_float(t: str) -> float | _Bad:
    v = float(t)
    return v if math.isfinite(v) else _Bad(f"the out-of-range number {t[:40]}")


def _parse_constant(t: str) -> _Bad:
    return _Bad(f"the non-finite number {t}")


def _find_bad(x: Any, path: str) -> str | None:
    if isinstance(x, _Bad):
        return f"{path or 'answer'}: {x.why}"
    if isinstance(x, str):
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path or 'answer'}: a string with a lone surrogate (not valid Unicode)"
        return None
    if isinstance(x, dict):
        for k, v in x.items():
            bad = _find_bad(k, f"{path}.<key>") or _find_bad(v, f"{path}.{k}" if path else str(k))
            if bad:
                return bad
    elif isinstance(x, list):
        for i, v in enumerate(x):
            if bad := _find_bad(v, f"{path}[{i}]"):
                return bad
    return None


def parse_answer(body: bytes, what: str, status: int = 200) -> Any:
    """Strict JSON of a hub answer; :class:`HubAnswerError` naming the field otherwise."""
    try:
        x = json.loads(body, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
        bad = _find_bad(x, what)
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, nested absurdly deep
        raise HubAnswerError(f"{what}: not JSON ({str(e)[:200]})", status) from None
    if bad:
        raise HubAnswerError(bad, status)
    return x


def obj(x: Any, what: str) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise HubAnswerError(f"{what}: expected a JSON object, got {type(x).__name__}")
    return x


def array(x: Any, what: str) -> list[Any]:
    if not isinstance(x, list):
        raise HubAnswerError(f"{what}: expected a JSON array, got {type(x).__name__}")
    return x


_MISSING = object()


def field(d: dict[str, Any], key: str, kind: str, what: str, default: Any = _MISSING) -> Any:
    """``d[key]`` checked to be of ``kind`` (int, number, str, hex64, name, bool; ``?`` suffix:
    null allowed)."""
    v = d.get(key, default)
    if v is _MISSING:
        raise HubAnswerError(f"{what}: field {key!r} is missing")
    if kind.endswith("?"):
        if v is None:
            return None
        kind = kind[:-1]
    ok = {
        "int": isinstance(v, int) and not isinstance(v, bool),
        "size": isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "number": isinstance(v, int | float) and not isinstance(v, bool),
        "str": isinstance(v, str),
        "bool": isinstance(v, bool),
        "hex64": isinstance(v, str) and _HEX64.fullmatch(v) is not None,
        "name": isinstance(v, str) and NAME_RE.fullmatch(v) is not None,
    }[kind]
    if not ok:
        shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
        raise HubAnswerError(f"{what}: field {key!r} must be a {kind}, got {shown}")
    return float(v) if kind == "number" else v


__all__ = ["HubAnswerError", "HubError", "array", "field", "obj", "parse_answer"]
