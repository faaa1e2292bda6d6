"""The bench report: one self-contained HTML page (inline CSS and SVG, no script, nothing fetched).

It holds the bench data twice, readable by machines: verbatim as JSON in
`<script type="application/json" id="tsexport-bench-data">` (inert: a browser does not run it), and as the plotted
points, each an SVG `<circle class="point">` with `data-plot`, `data-series`, `data-batch`, `data-length`,
`data-p50`, `data-p90` and `data-p99` attributes (milliseconds, the same numbers as the JSON).
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
import tempfile
from typing import Any

from ..protocol import json_safe

WIDTH, HEIGHT = 720, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 170, 20, 46
COLOURS = {"artifact": "#1f6fb4", "eager": "#c8432b", "aoti": "#2e8b57"}
DASHES = ["", "6 4", "2 3", "10 3 2 3"]
DATA_ID = "tsexport-bench-data"


def write_report(path: str, data: dict[str, Any]) -> None:
    """Render the report and put it at `path` atomically: a temporary file in the same folder, then a rename."""
    text = render(data)
    folder = os.path.dirname(path) or "."
    handle, temporary = tempfile.mkstemp(prefix=".bench-", suffix=".html.tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# ---------------------------------------------------------------------------------------------------------------
# Series


def _ok(stats: Any) -> bool:
    return isinstance(stats, dict) and isinstance(stats.get("p50_ms"), (int, float))


def latency_series(data: dict[str, Any]) -> list[dict[str, Any]]:
    """(side, batch) → points (length, p50, p90, p99), lengths ascending; failed measurements left out."""
    series: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in data.get("shapes", []):
        batch, length = row["shape"]
        for side in ("artifact", "aoti", "eager"):
            stats = row.get(side)
            if _ok(stats):
                series.setdefault((side, batch), []).append(_point(length, stats))
    return [
        {"plot": "latency", "series": side, "batch": batch, "label": f"{side}, batch {batch}",
         "points": sorted(points, key=lambda p: p["length"])}
        for (side, batch), points in sorted(
            series.items(), key=lambda item: (item[0][1], ("artifact", "aoti", "eager").index(item[0][0]))
        )
    ]


def padding_series(data: dict[str, Any]) -> list[dict[str, Any]]:
    padding = data.get("padding")
    if not padding:
        return []
    out = []
    for side in ("artifact", "eager"):
        points = [_point(row["length"], row[side]) for row in padding["rows"] if _ok(row.get(side))]
        if points:
            label = (f"artifact padded to {padding['traced_length']}" if side == "artifact"
                     else "eager, unpadded")
            batch = padding["rows"][0]["batch"]
            out.append({"plot": "padding", "series": side, "batch": batch, "label": label,
                        "points": sorted(points, key=lambda p: p["length"])})
    return out


def _point(length: int, stats: dict[str, Any]) -> dict[str, Any]:
    return {"length": length, "p50": stats["p50_ms"], "p90": stats["p90_ms"], "p99": stats["p99_ms"]}


# ---------------------------------------------------------------------------------------------------------------
# SVG


def _nice_step(span: float, ticks: int = 5) -> float:
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= raw:
            return float(factor * power)
    return float(10 * power)


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def _attr(value: float) -> str:
    """A number as an attribute: Python's shortest round-trip repr, so it parses back to the same float."""
    return repr(float(value))


def svg_plot(series: list[dict[str, Any]], title: str, x_label: str) -> str:
    if not series:
        return ""
    lengths = [p["length"] for s in series for p in s["points"]]
    highs = [p["p90"] for s in series for p in s["points"]]
    x_step = _nice_step(max(lengths))
    x_max = math.ceil(max(lengths) * 1.05 / x_step) * x_step
    y_step = _nice_step(max(highs) or 1.0)
    y_max = math.ceil((max(highs) or 1.0) * 1.1 / y_step) * y_step
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(value: float) -> float:
        return float(round(LEFT + plot_w * value / x_max, 2))

    def y(value: float) -> float:
        return round(TOP + plot_h * (1 - value / y_max), 2)

    parts = [
        f'<svg class="plot" role="img" aria-label="{html.escape(title)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}">',
        f"<title>{html.escape(title)}</title>",
        '<g class="axes">',
    ]
    tick = 0.0
    while tick <= y_max + 1e-12:
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick)}" y2="{y(tick)}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4}" text-anchor="end">{_num(tick)}</text>')
        tick += y_step
    tick = 0.0
    while tick <= x_max + 1e-12:
        parts.append(f'<line class="tick" x1="{x(tick)}" x2="{x(tick)}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 4}"/>')
        parts.append(f'<text x="{x(tick)}" y="{TOP + plot_h + 17}" text-anchor="middle">{_num(tick)}</text>')
        tick += x_step
    parts += [
        f'<line class="axis" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>',
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}"/>',
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle">{html.escape(x_label)}</text>',
        f'<text transform="translate(14 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        "latency, ms (p50; band to p90)</text>",
        "</g>",
    ]
    for index, s in enumerate(series):
        colour = COLOURS.get(s["series"], "#555")
        dash = DASHES[index // 2 % len(DASHES)]
        points = s["points"]
        upper = " ".join(f"{x(p['length'])},{y(p['p90'])}" for p in points)
        lower = " ".join(f"{x(p['length'])},{y(p['p50'])}" for p in reversed(points))
        line = " ".join(f"{x(p['length'])},{y(p['p50'])}" for p in points)
        parts.append(
            f'<g class="series" data-plot="{s["plot"]}" data-series="{s["series"]}" data-batch="{s["batch"]}">'
        )
        parts.append(f'<polygon class="band" points="{upper} {lower}" fill="{colour}"/>')
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<polyline class="p50" points="{line}" stroke="{colour}"{dash_attr}/>')
        for p in points:
            tip = (f"{s['label']}, length {p['length']}: p50 {p['p50']:.3f} ms, p90 {p['p90']:.3f} ms, "
                   f"p99 {p['p99']:.3f} ms")
            parts.append(
                f'<line class="p90" x1="{x(p["length"]) - 4}" x2="{x(p["length"]) + 4}" y1="{y(p["p90"])}" '
                f'y2="{y(p["p90"])}" stroke="{colour}"/>'
            )
            parts.append(
                f'<circle class="point" cx="{x(p["length"])}" cy="{y(p["p50"])}" r="3.5" fill="{colour}" '
                f'data-plot="{s["plot"]}" data-series="{s["series"]}" data-batch="{s["batch"]}" '
                f'data-length="{p["length"]}" data-p50="{_attr(p["p50"])}" data-p90="{_attr(p["p90"])}" '
                f'data-p99="{_attr(p["p99"])}"><title>{html.escape(tip)}</title></circle>'
            )
        legend_y = TOP + 10 + index * 20
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 14}" x2="{WIDTH - RIGHT + 40}" y1="{legend_y}" y2="{legend_y}" '
            f'stroke="{colour}" stroke-width="2.5"{dash_attr}/>'
            f'<text x="{WIDTH - RIGHT + 46}" y="{legend_y + 4}">{html.escape(s["label"])}</text>'
        )
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# The page


def _cell(stats: Any, key: str) -> str:
    if not isinstance(stats, dict):
        return "—"
    value = stats.get(key)
    if value is None:
        return "—"
    if key.endswith("_bytes"):
        return f"{value / 2**20:.1f}"
    return f"{value:.3f}"


def _stats_row(label: str, side: str, stats: Any, note: str = "") -> str:
    if isinstance(stats, dict) and stats.get("error"):
        body = f'<td colspan="5" class="error">failed: {html.escape(str(stats["error"]))}</td>'
    elif stats is None:
        body = '<td colspan="5">not measured</td>'
    else:
        body = "".join(
            f"<td>{_cell(stats, key)}</td>" for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "peak_rss_delta_bytes")
        )
    return f"<tr><td>{html.escape(label)}</td><td>{side}</td>{body}<td>{html.escape(note)}</td></tr>"


def _table(rows: list[str]) -> str:
    head = ("<tr><th>shape</th><th>side</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>mean ms</th>"
            "<th>peak RSS Δ MiB</th><th>inputs</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def render(data: dict[str, Any]) -> str:
    title = f"tsexport bench: {data.get('name') or data.get('bundle')}"
    payload = json.dumps(json_safe(data), ensure_ascii=False, allow_nan=False, indent=1)
    payload = payload.replace("</", "<\\/")  # cannot close the script element early
    eager = data.get("eager") or {}
    threads = f"{data.get('threads')} thread(s)" + (" (torch's default)" if data.get("threads_default") else "")
    facts = [
        f"model class {data.get('model_class') or '?'}, inputs {', '.join(data.get('inputs') or [])}, traced at "
        f"{data.get('traced_shape')}, device {data.get('device')}",
        f"{data.get('runs')} timed runs after {data.get('warmup')} warm-up runs per shape and side, {threads}",
        "peak memory: resident set high-water mark during the runs minus the resident set before them "
        f"({data.get('memory_method') or 'not available'})",
    ]
    if eager.get("available"):
        error = eager.get("reference_max_abs_error")
        facts.append(
            f"eager model rebuilt from the record (attention {eager.get('attn_implementation')})"
            + (f"; it matches the recorded reference outputs to {error:.2e}" if isinstance(error, float) else "")
        )
    else:
        facts.append(f"eager model not measured: {eager.get('reason')}")
    versions = data.get("versions") or {}
    if versions:
        facts.append(", ".join(f"{k} {v}" for k, v in versions.items() if v))

    rows = []
    for row in data.get("shapes", []):
        label = str(row["shape"])
        note = f"sample case {row['case']}" if row.get("case") else "drawn from the traced inputs"
        rows.append(_stats_row(label, "artifact", row.get("artifact"), note))
        if row.get("aoti") is not None:
            rows.append(_stats_row(label, "aoti", row.get("aoti"), note))
        rows.append(_stats_row(label, "eager", row.get("eager"), note))
    sections = [
        f"<h2>Latency against sequence length</h2>{svg_plot(latency_series(data), title, 'sequence length')}",
        _table(rows),
    ]
    padding = data.get("padding")
    if padding:
        prows = []
        for row in padding["rows"]:
            label = f"{row['length']} real tokens"
            prows.append(_stats_row(label, "artifact", row.get("artifact"),
                                    f"padded to {padding['traced_length']}"))
            prows.append(_stats_row(label, "eager", row.get("eager"), "unpadded"))
        sections.append(
            f"<h2>What padding costs</h2><p>The artifact was traced padded to {padding['traced_length']} tokens "
            f"({padding['real_tokens']} real). It runs at that length whatever the real length; the eager model runs "
            "on the real tokens only.</p>"
            + svg_plot(padding_series(data), f"{title}: padding", "real sequence length")
            + _table(prows)
        )
    style = (
        "body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:920px}"
        "h1{font-size:20px}h2{font-size:16px;margin-top:28px}"
        "table{border-collapse:collapse;margin:10px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,td:nth-child(2),td:last-child,th{text-align:left}.error{color:#a00;text-align:left}"
        ".plot text{font-size:11px;fill:#333}.plot .grid{stroke:#e6e6e6}.plot .axis,.plot .tick{stroke:#444}"
        ".plot .band{opacity:.18;stroke:none}.plot .p50{fill:none;stroke-width:2}.plot .p90{stroke-width:1.5}"
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n<ul>{''.join(f'<li>{html.escape(f)}</li>' for f in facts)}</ul>\n"
        + "\n".join(sections)
        + f'\n<script type="application/json" id="{DATA_ID}">\n{payload}\n</script>\n</body></html>\n'
    )
