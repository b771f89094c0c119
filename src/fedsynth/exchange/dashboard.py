"""Read-only HTML dashboard of the hub (server-side rendered, no scripts, everything escaped)."""

from __future__ import annotations

from html import escape
from typing import Any

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}.refused{color:#b00}
code{font-size:.9em}
"""


def _table(headers: list[str], rows: list[list[Any]], cls: str, num: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for r in rows:
        tds = "".join(
            f'<td class="num">{escape(str(v))}</td>' if i in num else f"<td>{escape(str(v))}</td>"
            for i, v in enumerate(r)
        )
        body.append(f"<tr>{tds}</tr>")
    if not rows:
        body.append(f'<tr><td colspan="{len(headers)}"><em>none</em></td></tr>')
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"


def _spec_summary(spec: dict) -> str:
    """A one-line view of a family spec: its scalar settings (the layout is the schema's)."""
    items = [
        f"{k} {v}"
        for k, v in sorted(spec.items())
        if isinstance(v, int | float | str | list) and k != "layout"
    ]
    return ", ".join(str(x) for x in items)[:300]


def render_dashboard(sections: list[dict[str, Any]]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fedsynth generator hub</title>"
        f"<style>{_CSS}</style>"
        "</head><body><h1>fedsynth generator hub</h1>"
    ]
    if not sections:
        parts.append("<p>No federations yet.</p>")
    for sec in sections:
        r = sec["requirements"]
        schema = r["schema"]
        budget = r["silo_epsilon_budget"]
        parts.append(f'<section class="federation" data-federation="{escape(r["federation"])}">')
        parts.append(f"<h2>Federation <code>{escape(r['federation'])}</code></h2>")
        parts.append(
            _table(
                ["requirement", "value"],
                [
                    ["max ε per generator", _fmt(r["max_epsilon"])],
                    ["max δ per generator", _fmt(r["max_delta"])],
                    ["ε budget per silo (Σ over pushes)", _fmt(budget)],
                    [
                        "schema",
                        f"{len(schema['columns'])} columns, target {schema['target']}, "
                        f"hash {r['schema_hash'][:12]}",
                    ],
                    *([f"family {f['kind']}", _spec_summary(f["spec"])] for f in r["families"]),
                ],
                "requirements",
            )
        )
        parts.append("<h3>Silos</h3>")
        parts.append(
            _table(
                ["silo", "ε spent", "ε reserved", "ε budget", "δ spent", "registered"],
                [
                    [
                        s["name"],
                        _fmt(s["epsilon_spent"]),
                        _fmt(s.get("epsilon_reserved", 0.0)),
                        _fmt(budget),
                        _fmt(s["delta_spent"]),
                        s["created"],
                    ]
                    for s in sec["silos"]
                ],
                "silos",
                {1, 2, 3, 4},
            )
        )
        parts.append("<h3>Generator pool</h3>")
        parts.append(
            _table(
                ["id", "silo", "family", "class", "ε", "δ", "accountant", "created", "bytes", "sha256"],
                [
                    [
                        g["id"],
                        g["silo"] if g["silo"] is not None else f"(federation round {g.get('round_id')})",
                        g["family"],
                        g["class_label"] if g["class_label"] is not None else "(joint)",
                        _fmt(g["epsilon"]),
                        _fmt(g["delta"]),
                        g["accountant"],
                        g["created"],
                        g["size"],
                        g["weights_sha256"][:16],
                    ]
                    for g in sec["pool"]
                ],
                "pool",
                {0, 3, 4, 7},
            )
        )
        parts.append("<h3>Federation rounds</h3>")
        parts.append(
            _table(
                ["round", "family", "status", "ε", "δ", "min silos", "members", "joins until", "detail"],
                [
                    [
                        r["id"],
                        r["family"],
                        r["status"],
                        _fmt(r["epsilon"]),
                        _fmt(r["delta"]),
                        r["min_silos"],
                        r["members"],
                        r["deadline"],
                        r["detail"],
                    ]
                    for r in sec.get("rounds", [])
                ],
                "rounds",
                {0, 3, 4, 5, 6},
            )
        )
        parts.append("<h3>Recent audit events</h3>")
        parts.append(
            _table(
                ["time", "silo", "action", "outcome", "ε", "sha256", "detail"],
                [
                    [
                        a["time"],
                        a["silo"] or "",
                        a["action"],
                        a["outcome"],
                        _fmt(a["epsilon"]),
                        (a["sha256"] or "")[:16],
                        a["detail"],
                    ]
                    for a in sec["audit"]
                ],
                "audit",
                {4},
            )
        )
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)
