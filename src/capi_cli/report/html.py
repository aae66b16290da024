"""`capi report --html FILE`: one self-contained page (it opens with no network) with charts.

The charts are drawn by plotly.js, embedded inline from the `plotly` package (the optional extra
`capi-cli[report]`): a well-kept library whose one file draws lines, grouped bars and donuts with
hover and zoom, and needs nothing from the network (no CDN, no fonts, no MathJax unless asked).
"""

from __future__ import annotations

import html
import os
from collections import Counter
from typing import TYPE_CHECKING, Any

from capi_cli.errors import SetupError, UsageError

if TYPE_CHECKING:
    from capi_cli.report.build import Report

TOP_ADS = 8  # ads in the funnel one by one (twice that), the series give the top ones (build.SERIES_ADS)
_CONFIG = {"displaylogo": False, "responsive": True}
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1f2933; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.period { color: #52606d; margin-top: 0; }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e4e7eb; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #c62828; font-weight: 600; } .chart { width: 100%; max-width: 1100px; height: 380px; }
"""


def check_available() -> None:
    """Before any work: the page needs the optional extra."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise SetupError(
            "--html needs the charts library: pip install 'capi-cli[report]' (it installs plotly)"
        ) from None


def _label(row: dict[str, Any]) -> str:
    if row["ad_id"] is None:
        return "ad unknown"
    headline = row.get("headline")
    return f"{headline[:28]} ({row['ad_id']})" if headline else str(row["ad_id"])


def _main_currency(report: Report) -> str | None:
    totals: Counter[str] = Counter()
    for cell in report.series:
        for currency, amount in cell["value"].items():
            totals[currency] += amount
    return totals.most_common(1)[0][0] if totals else None


def _over_time(report: Report, labels: dict[str | None, str]) -> list[Any]:
    """Conversions (sent events) and value per day, one line per top ad."""
    import plotly.graph_objects as go

    days = sorted({cell["day"] for cell in report.series})
    currency = _main_currency(report)
    events: dict[str, Counter[str]] = {}
    value: dict[str, Counter[str]] = {}
    for cell in report.series:
        name = labels.get(cell["ad_id"], "other ads")
        if name == "other ads" and not cell["events"] and not any(cell["value"].values()):
            continue
        events.setdefault(name, Counter())[cell["day"]] += cell["events"]
        if currency:
            value.setdefault(name, Counter())[cell["day"]] += cell["value"].get(currency, 0.0)
    axis = {"type": "date", "dtick": 86400000, "tickformat": "%b %d"}
    conversions = go.Figure(layout={"title": "Conversions (events accepted by Meta) per day, by ad",
                                    "hovermode": "x unified", "margin": {"t": 50}, "xaxis": axis})
    for name, per_day in events.items():
        conversions.add_trace(go.Scatter(x=days, y=[per_day.get(d, 0) for d in days], name=name,
                                         mode="lines+markers"))
    worth = go.Figure(layout={"title": f"Value per day, by ad ({currency or 'no value sent'})",
                              "barmode": "stack", "margin": {"t": 50}, "xaxis": axis})
    for name, per_day in value.items():
        worth.add_trace(go.Bar(x=days, y=[round(per_day.get(d, 0.0), 2) for d in days], name=name))
    return [conversions, worth]


def _funnel(report: Report, labels: dict[str | None, str]) -> Any:
    import plotly.graph_objects as go

    rows = [row for row in report.rows if row["ad_id"] is not None][: TOP_ADS * 2]
    names = [_label(row) for row in rows]
    figure = go.Figure(layout={"title": "Conversations started → converted, per ad", "barmode": "group",
                               "margin": {"t": 50, "l": 220}, "yaxis": {"autorange": "reversed"}})
    figure.add_trace(go.Bar(y=names, x=[row["conversations"] for row in rows], name="conversations",
                            orientation="h", marker_color="#9fb3c8"))
    figure.add_trace(go.Bar(y=names, x=[row["converted_conversations"] for row in rows],
                            name="converted conversations", orientation="h", marker_color="#2f9e44",
                            text=[f"{(row['conversion_rate'] or 0) * 100:.0f}%" for row in rows],
                            textposition="outside"))
    return figure


def _coverage(report: Report) -> list[Any]:
    import plotly.graph_objects as go

    coverage = report.coverage
    sent, with_ad = coverage["events_sent"], coverage["with_ad"]
    parts = {"sent, ad known": with_ad, "sent, ad unknown": sent - with_ad, "rejected": coverage["rejected"],
             "uncertain": coverage["uncertain"], "unattributed (not sent)": coverage["unattributed"]}
    donut = go.Figure(go.Pie(labels=list(parts), values=list(parts.values()), hole=0.5, sort=False,
                             marker={"colors": ["#37b24d", "#adb5bd", "#e03131", "#f08c00", "#495057"]}),
                      layout={"title": "Events of the period", "margin": {"t": 50}})
    keys = coverage["match_keys"]
    shares = go.Figure(go.Bar(x=list(keys), y=[round(v * 100, 1) for v in keys.values()], marker_color="#1c7ed6",
                              text=[f"{v * 100:.0f}%" for v in keys.values()], textposition="outside"),
                       layout={"title": "Share of sent events carrying each match key (%)",
                               "yaxis": {"range": [0, 110]}, "margin": {"t": 50}})
    return [donut, shares]


def _table(columns: list[str], rows: list[list[Any]], numeric: set[int], bad: set[int] | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            classes = ["n"] if i in numeric else []
            if bad and i in bad and value not in (0, "0", None, ""):
                classes.append("bad")
            text = "" if value is None else str(value)
            cells.append(f'<td class="{" ".join(classes)}">{html.escape(text)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_page(report: Report) -> str:
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    ad_rows = [row for row in report.rows if row.get("ad_id") is not None] if report.by == "ad" else []
    labels = {row["ad_id"]: _label(row) for row in ad_rows[:TOP_ADS]}
    labels[None] = "ad unknown"
    figures = [*_over_time(report, labels), _funnel(report, labels), *_coverage(report)]
    charts = "".join(
        pio.to_html(figure, full_html=False, include_plotlyjs=False, config=_CONFIG,
                    div_id=f"chart-{number}", default_height="380px")
        for number, figure in enumerate(figures)
    )
    period = report.to_dict()["period"]
    rows_table = _table(
        ["ad", "channel", "conversations", "converted", "rate", "events", "value", "first seen", "last seen"],
        [[_label(r), r["channel"], r["conversations"], r["converted_conversations"],
          "" if r["conversion_rate"] is None else f"{r['conversion_rate'] * 100:.1f}%",
          ", ".join(f"{k} {v}" for k, v in r["events"].items()),
          ", ".join(f"{v:,.2f} {k}" for k, v in r["value"].items()), r["first_seen"], r["last_seen"]]
         for r in report.rows] if report.by == "ad" else [],
        {2, 3, 4},
    )
    runs_table = _table(
        ["started", "inputs", "read", "invalid", "unattributed", "sent", "rejected", "failed", "uncertain", "exit"],
        [[r["started_at"], " ".join(os.path.basename(name) for name in r["inputs"]), r["read"], r["invalid"], r["unattributed"], r["sent"],
          r["rejected"], r["failed"], r["uncertain"], r["exit_code"]] for r in report.runs],
        set(range(2, 10)), {9},
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>capi report {html.escape(str(period['since']))} .. {html.escape(str(period['until']))}</title>"
        f"<style>{_STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
        "<h1>Which ads start conversations that convert</h1>"
        f"<p class=\"period\">{html.escape(str(period['since']))} .. {html.escape(str(period['until']))}"
        " &middot; from the capi ledger</p>"
        f"{charts}<h2>Per ad</h2>{rows_table}<h2>Last runs of capi send</h2>{runs_table}"
        "</body></html>\n"
    )


def write_page(report: Report, path: str) -> None:
    text = render_page(report)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as exc:
        raise UsageError(f"--html {path}: cannot write: {exc.strerror}") from None
