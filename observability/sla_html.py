"""An SLA report as one self-contained HTML file: a summary table and inline SVG charts, no
scripts, fonts or stylesheets from the network, so it opens offline and can be attached to
a monthly report. Works from the report's JSON (`SlaReport.as_json()`, the API's answer)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape
from typing import Any

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 36
OUTCOME_COLOURS = (("ok", "#2e7d32"), ("errors", "#c62828"), ("rejected", "#ef6c00"),
                   ("cancelled", "#9e9e9e"))

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 760px; color: #222; }
h1 { font-size: 1.4rem; margin-bottom: 0.2rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; } td, th { padding: 4px 8px; text-align: left;
  border-bottom: 1px solid #ddd; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.met { color: #2e7d32; font-weight: 600; } .missed { color: #c62828; font-weight: 600; }
.note { color: #666; font-size: 0.85rem; } svg { background: #fafafa; }
"""


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _verdict(met: bool | None) -> str:
    if met is None:
        return '<span class="note">no data</span>'
    return '<span class="met">met</span>' if met else '<span class="missed">missed</span>'


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _label(bucket: dict[str, Any], by: str) -> str:
    start = _when(bucket["start"])
    return start.strftime("%m-%d %H:00" if by == "hour" else "%Y-%m-%d")


def _frame(title: str, y_max: float, y_format: Callable[[float], str], labels: Sequence[str],
           body: str) -> str:
    """An SVG chart: axes, four horizontal grid lines, a few x labels, then `body`."""
    plot_h, plot_w = HEIGHT - TOP - BOTTOM, WIDTH - LEFT - RIGHT
    parts = [(f'<svg width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">')]
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="10" '
                     f'text-anchor="end">{escape(y_format(y_max * i / 4))}</text>')
    step = max(1, len(labels) // 6)
    for i in range(0, len(labels), step):
        x = LEFT + plot_w * (i + 0.5) / max(len(labels), 1)
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 12}" font-size="10" '
                     f'text-anchor="middle">{escape(labels[i])}</text>')
    parts.append(body)
    parts.append("</svg>")
    return "".join(parts)


def _y(value: float, y_max: float) -> float:
    plot_h = HEIGHT - TOP - BOTTOM
    return TOP + plot_h - plot_h * min(value / y_max, 1.0)


def requests_chart(buckets: list[dict[str, Any]], by: str) -> str:
    """Stacked bars of requests per bucket by outcome."""
    y_max = max([b["requests"] for b in buckets] + [1])
    plot_w = WIDTH - LEFT - RIGHT
    width = plot_w / max(len(buckets), 1)
    bars = []
    for i, bucket in enumerate(buckets):
        base = 0
        for field, colour in OUTCOME_COLOURS:
            count = bucket[field]
            if count:
                top, bottom = _y(base + count, y_max), _y(base, y_max)
                bars.append(f'<rect x="{LEFT + i * width + width * 0.1:.1f}" y="{top:.1f}" '
                            f'width="{width * 0.8:.1f}" height="{bottom - top:.1f}" '
                            f'fill="{colour}"><title>{field}: {count}</title></rect>')
            base += count
    return _frame("requests", y_max, lambda v: f"{v:.0f}", [_label(b, by) for b in buckets],
                  "".join(bars))


def line_chart(title: str, buckets: list[dict[str, Any]], by: str, field: str,
               target: float, y_format: Callable[[float], str]) -> str:
    """The per-bucket values of `field` as a line with dots, and the target as a dashed line;
    buckets without a value leave a gap rather than a made-up zero."""
    values = [b[field] for b in buckets]
    y_max = max([v for v in values if v is not None] + [target]) * 1.15 or 1.0
    plot_w = WIDTH - LEFT - RIGHT
    points = [(LEFT + plot_w * (i + 0.5) / max(len(values), 1), _y(v, y_max))
              for i, v in enumerate(values) if v is not None]
    body = [(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_y(target, y_max):.1f}" '
            f'y2="{_y(target, y_max):.1f}" stroke="#c62828" stroke-dasharray="6 4">'
            f'<title>target {escape(y_format(target))}</title></line>')]
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(f'<polyline points="{path}" fill="none" stroke="#1565c0" '
                    'stroke-width="2"/>')
    body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1565c0"/>' for x, y in points]
    return _frame(title, y_max, y_format, [_label(b, by) for b in buckets], "".join(body))


def batch_section(batch: dict[str, Any]) -> str:
    """Batch jobs apart from interactive traffic: no latency target, so counts and tokens."""
    if not batch.get("lines"):
        return ""
    outcomes = batch["outcomes"]
    rows = [("Batches", f"{batch['batches']:,}"), ("Lines", f"{batch['lines']:,}"),
            ("Availability (ok / (ok + platform faults))", _share(batch["availability"])),
            ("Ok / errors / rejected", (f"{outcomes['ok']:,} / {outcomes['error']:,} / "
                                        f"{outcomes['rejected']:,}")),
            ("Tokens (prompt + completion)", (f"{batch['total_tokens']:,} "
                                              f"({batch['prompt_tokens']:,} + "
                                              f"{batch['completion_tokens']:,})"))]
    cells = "".join(f'<tr><td>{escape(a)}</td><td class="num">{escape(b)}</td></tr>'
                    for a, b in rows)
    return ('<h2>Batch jobs</h2><p class="note">Not in the figures above: batch lines have '
            f"no latency target.</p><table>{cells}</table>")


def render_html(report: dict[str, Any]) -> str:
    """The whole page for one report (the JSON form of `observability.sla.SlaReport`)."""
    tenant = escape(report["tenant"])
    by, buckets = report["bucket"], report["buckets"]
    ttft, itl = report["ttft"], report["itl"]
    outcomes = report["outcomes"]
    rows = [
        ("Requests", f"{report['requests']:,}", ""),
        ("Availability (ok / (ok + platform faults))", _share(report["availability"]), ""),
        ("Compliant requests", f"{_share(report['compliance'])} of {report['judged']:,}",
         f"objective {_share(report['objective'])}: {_verdict(report['objective_met'])}"),
        ("Rejections (rate limits, quotas)", f"{report['rejections']:,}", ""),
        ("Errors / cancelled by client", (f"{outcomes['error']:,} / "
                                         f"{outcomes['client_cancelled']:,}"), ""),
        ("Tokens (prompt + completion)", f"{report['total_tokens']:,}",
         f"{report['prompt_tokens']:,} + {report['completion_tokens']:,}"),
    ]
    latency_rows = [
        (name, lat["samples"], lat["p50_s"], lat["p95_s"], lat["p99_s"], lat["target_p95_s"],
         lat["met"]) for name, lat in (("Time to first token", ttft),
                                       ("Inter-token latency", itl))]
    charts = [
        ("Requests by outcome", requests_chart(buckets, by)),
        ("Time to first token, p95", line_chart("ttft p95", buckets, by, "ttft_p95_s",
                                                ttft["target_p95_s"], _seconds)),
        ("Inter-token latency, p95", line_chart("itl p95", buckets, by, "itl_p95_s",
                                                itl["target_p95_s"], _seconds)),
        ("Compliant requests", line_chart("compliance", buckets, by, "compliance",
                                          report["objective"], _share)),
    ]
    batch = report.get("batch") or {}
    definitions = "".join(f"<li><b>{escape(k)}</b>: {escape(v)}</li>"
                          for k, v in report["definitions"].items())
    summary = "".join(f'<tr><td>{escape(a)}</td><td class="num">{escape(b)}</td><td>{c}</td>'
                      "</tr>" for a, b, c in rows)
    latency = "".join(
        f'<tr><td>{name}</td><td class="num">{n:,}</td><td class="num">{_seconds(p50)}</td>'
        f'<td class="num">{_seconds(p95)}</td><td class="num">{_seconds(p99)}</td>'
        f'<td class="num">{_seconds(target)}</td><td>{_verdict(met)}</td></tr>'
        for name, n, p50, p95, p99, target, met in latency_rows)
    figures = "".join(f"<h2>{escape(title)} per {escape(by)}</h2>{svg}"
                      for title, svg in charts)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>SLA report: {tenant}</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>SLA report: {tenant}</h1>"
        f'<p class="note">{escape(report["since"])} to {escape(report["until"])} (UTC)</p>'
        f"<table>{summary}</table>"
        "<h2>Latency</h2><table><tr><th>SLI</th><th>Requests</th><th>p50</th><th>p95</th>"
        f"<th>p99</th><th>p95 target</th><th></th></tr>{latency}</table>"
        f"{figures if buckets else '<p>No requests in this window.</p>'}"
        f"{batch_section(batch)}"
        f'<h2>How the figures count</h2><ul class="note">{definitions}</ul>'
        "</body></html>\n")
