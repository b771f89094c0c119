"""Read-only HTML dashboard of the hub (server-side rendered, no scripts, everything escaped).

Pictures are inline SVG drawn here (no script, no external resource): per-silo ε spent and
reserved against the budget, and the pool's size per class and per generator family."""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}.refused{color:#b00}
code{font-size:.9em}
svg.chart{display:block;margin:.5em 0 1em;font-size:12px}
.bar-spent{fill:#3b6fb6}.bar-reserved{fill:#9fbce6}.bar-over{fill:#b00}.bar-count{fill:#5a8f5a}
.budget{stroke:#222;stroke-width:1.5;stroke-dasharray:4 2}.axis{stroke:#bbb}
"""

_LABEL_W, _BAR_W, _ROW_H = 190, 360, 20


def _short(name: str, n: int = 26) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _hbars(
    cls: str,
    title: str,
    rows: list[tuple[str, list[tuple[float, str]], str]],
    scale_max: float,
    *,
    marker: float | None = None,
    marker_label: str = "",
) -> str:
    """Horizontal bars as inline SVG. ``rows``: (label, stacked (value, css class) segments,
    value text). ``marker``: a dashed vertical line (the budget). Labels are escaped text nodes,
    with the full name in a ``<title>`` when shortened."""
    if not rows:
        return ""
    top = 18 if marker is not None else 4
    h = top + _ROW_H * len(rows) + 4
    w = _LABEL_W + _BAR_W + 200  # room for the value text after the longest bar
    sx = _BAR_W / scale_max if scale_max > 0 else 0.0
    out = [
        f'<svg class="chart {escape(cls)}" role="img" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line class="axis" x1="{_LABEL_W}" y1="{top - 2}" x2="{_LABEL_W}" y2="{h - 2}"/>',
    ]
    for k, (label, segs, text) in enumerate(rows):
        y = top + k * _ROW_H
        tip = f"<title>{escape(label)}</title>" if _short(label) != label else ""
        out.append(
            f'<text class="label" x="{_LABEL_W - 6}" y="{y + 14}" text-anchor="end">'
            f"{escape(_short(label))}{tip}</text>"
        )
        x = float(_LABEL_W)
        for v, c in segs:
            bw = max(v, 0.0) * sx
            if bw > 0:
                out.append(
                    f'<rect class="{escape(c)}" x="{x:.1f}" y="{y + 3}" '
                    f'width="{bw:.1f}" height="{_ROW_H - 6}"/>'
                )
            x += bw
        out.append(f'<text class="value" x="{x + 4:.1f}" y="{y + 14}">{escape(text)}</text>')
    if marker is not None:
        mx = _LABEL_W + marker * sx
        out.append(f'<line class="budget" x1="{mx:.1f}" y1="{top - 4}" x2="{mx:.1f}" y2="{h - 2}"/>')
        out.append(f'<text x="{mx:.1f}" y="11" text-anchor="middle">{escape(marker_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _epsilon_chart(silos: list[dict[str, Any]], budget: float) -> str:
    """Per silo: ε spent, then ε reserved by joined rounds, against the budget (dashed line);
    the part of spent + reserved beyond the budget is red (it should never happen)."""
    rows = []
    for s in silos:
        spent, res = float(s["epsilon_spent"] or 0.0), float(s.get("epsilon_reserved") or 0.0)
        over = max(spent + res - budget, 0.0)
        segs = [(min(spent, budget), "bar-spent"), (min(res, max(budget - spent, 0.0)), "bar-reserved")]
        segs.append((over, "bar-over"))
        text = f"{spent:.3g}" + (f" + {res:.3g} reserved" if res else "") + f" of {budget:.3g}"
        rows.append((str(s["name"]), segs, text))
    top = max([budget, *(sum(v for v, _ in r[1]) for r in rows)], default=1.0)
    return _hbars("epsilon", "ε spent and reserved per silo against the budget", rows, top,
                  marker=budget, marker_label=f"budget {budget:.3g}")  # fmt: skip


def _count_chart(cls: str, title: str, counts: Counter[str]) -> str:
    rows = [(k, [(float(v), "bar-count")], str(v)) for k, v in sorted(counts.items())]
    return _hbars(cls, title, rows, float(max(counts.values(), default=1)))


def _pool_charts(pool: list[dict[str, Any]]) -> str:
    """Pool size per class (a joint model draws every class: its own bar) and per family; a
    federation round's generators (silo null) are counted under their family, marked as such."""
    by_class = Counter("(joint)" if g["class_label"] is None else str(g["class_label"]) for g in pool)
    by_family = Counter(
        f"{g['family']} (federation)" if g["silo"] is None else str(g["family"]) for g in pool
    )
    return _count_chart("pool-classes", "generators per class", by_class) + _count_chart(
        "pool-families", "generators per family", by_family
    )


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
        parts.append(_epsilon_chart(sec["silos"], float(budget)))
        parts.append("<h3>Generator pool</h3>")
        parts.append(_pool_charts(sec["pool"]))
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
