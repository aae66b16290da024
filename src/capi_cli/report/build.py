"""`capi report`'s figures (SPEC §10): per ad (or channel, event, day), coverage and runs.

A conversation is one stored ad referral, selected by the referral's time; it is converted when
at least one event tied to it was accepted by Meta (`sent`) by the end of the period.
Conversions and value count `sent` events only, selected by event time; rejected and uncertain
ones show in coverage. Events whose ad is unknown (sent before the report facts existed, or with
no stored referral) are one row with `ad_id` null.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from capi_cli.ledger.referrals import iso_z
from capi_cli.report import queries
from capi_cli.report.queries import BUCKET_SECONDS, Period, ReportSource
from capi_cli.rules import HASHED_FIELDS

GROUPINGS = ("ad", "channel", "event", "day")
GROUP_KEYS = {"ad": ("ad_id", "channel", "headline", "source_url"), "channel": ("channel",),
              "event": ("event_name",), "day": ("day",)}
METRIC_KEYS = ("conversations", "converted_conversations", "conversion_rate", "events", "value",
               "first_seen", "last_seen")
RUNS_SHOWN = 10
SERIES_ADS = 8  # ads drawn one by one in the page's charts over time; the rest as "other ads"


@dataclass
class Group:
    """The figures of one row while they are added up."""

    conversations: int = 0
    converted: int = 0
    events: Counter[str] = field(default_factory=Counter)
    value: dict[str, float] = field(default_factory=dict)
    first: int | None = None
    last: int | None = None
    channels: set[str] = field(default_factory=set)
    headline: str | None = None
    source_url: str | None = None

    def seen(self, first: Any, last: Any) -> None:
        # Called per row read (60,000 on a large ledger): comparisons, not min()/max() calls.
        if first is not None:
            first = int(first)
            if self.first is None or first < self.first:
                self.first = first
        if last is not None:
            last = int(last)
            if self.last is None or last > self.last:
                self.last = last

    def add_events(self, name: str, count: int, currency: str | None, value: Any) -> None:
        self.events[name] += int(count)
        if currency and value is not None:
            self.value[currency] = self.value.get(currency, 0.0) + float(value)

    def metrics(self) -> dict[str, Any]:
        return {
            "conversations": self.conversations,
            "converted_conversations": self.converted,
            "conversion_rate": round(self.converted / self.conversations, 4) if self.conversations else None,
            "events": dict(sorted(self.events.items())),
            "value": {c: round(v, 2) for c, v in sorted(self.value.items())},
            "first_seen": iso_z(self.first),
            "last_seen": iso_z(self.last),
        }


@dataclass
class Report:
    since: int
    until: int
    by: str
    rows: list[dict[str, Any]]
    coverage: dict[str, Any]
    runs: list[dict[str, Any]]
    # For the HTML page only (not in the JSON): per ad and day, sent events, value and conversations.
    series: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": {"since": iso_z(self.since), "until": iso_z(self.until)},
            "by": self.by,
            "rows": self.rows,
            "coverage": self.coverage,
            "runs": self.runs,
        }


def build_report(
    source: ReportSource, period: Period, by: str = "ad", tz: tzinfo = UTC, *, series: bool = False
) -> Report:
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {GROUPINGS}")
    conversations: list[tuple[Any, ...]] = []
    if by == "day":
        scan = queries.event_groups(source, period)
    else:
        scan, conversations = _long_reads(source, period)
    sent = [row for row in scan if row[0] == "sent"]
    if by == "ad":
        rows = _by_ad(conversations, sent)
    elif by == "channel":
        rows = _by_channel(conversations, sent)
    elif by == "event":
        rows = _by_event(source, period, conversations, sent)
    else:
        rows = _by_day(source, period, tz)
    report = Report(period.since, period.until, by, rows, _coverage(source, period, scan), _runs(source, period))
    if series:
        top = [row["ad_id"] for row in rows if row.get("ad_id")][:SERIES_ADS] if by == "ad" else []
        report.series = _series(source, period, tz, top)
    return report


def _group(groups: dict[Any, Group], key: Any) -> Group:
    """The group of `key`, made on first sight (a setdefault would make a Group per row read)."""
    group = groups.get(key)
    if group is None:
        group = groups[key] = Group()
    return group


def _long_reads(source: ReportSource, period: Period) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(event_groups, conversation_groups): the report's two long reads (every sent event of the
    period; a probe per conversation), at once when the ledger has a second connection for the
    second, so that each takes a core of the database (SQLite and psycopg let go of Python's lock
    while the database works)."""
    reader = getattr(source, "report_reader", None)
    if reader is None:
        return queries.event_groups(source, period), queries.conversation_groups(source, period)
    with ThreadPoolExecutor(max_workers=1) as pool:
        conversations = pool.submit(queries.conversation_groups, reader(), period)
        return queries.event_groups(source, period), conversations.result()


def _by_ad(conversation_groups: list[tuple[Any, ...]], sent: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    groups: dict[str | None, Group] = {}
    for channel, ad_id, conversations, converted, first, last, headline, url in conversation_groups:
        group = _group(groups, ad_id)
        group.conversations += int(conversations)
        group.converted += int(converted)
        group.seen(first, last)
        group.channels.add(channel)
        group.headline = group.headline or headline
        group.source_url = group.source_url or url
    for _, channel, ad_id, name, currency, _, count, value, first, last in sent:
        group = _group(groups, ad_id)
        group.add_events(name, count, currency, value)
        group.seen(first, last)
        if channel:
            group.channels.add(channel)
    rows = []
    for ad_id, group in groups.items():
        channel = next(iter(group.channels)) if len(group.channels) == 1 else None
        rows.append({"ad_id": ad_id, "channel": channel, "headline": group.headline,
                     "source_url": group.source_url, **group.metrics()})
    # Best ads first; the ad-unknown row last: it is not an ad one can keep or cut.
    rows.sort(key=lambda r: (r["ad_id"] is None, -r["converted_conversations"], -sum(r["events"].values()),
                             -r["conversations"], r["ad_id"] or ""))
    return rows


def _by_channel(conversation_groups: list[tuple[Any, ...]], sent: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    groups: dict[str | None, Group] = {}
    for channel, _, conversations, converted, first, last, _, _ in conversation_groups:
        group = _group(groups, channel)
        group.conversations += int(conversations)
        group.converted += int(converted)
        group.seen(first, last)
    for _, channel, _, name, currency, _, count, value, first, last in sent:
        group = _group(groups, channel)
        group.add_events(name, count, currency, value)
        group.seen(first, last)
    rows = [{"channel": channel, **group.metrics()} for channel, group in groups.items()]
    rows.sort(key=lambda r: (r["channel"] is None, r["channel"] or ""))
    return rows


def _by_event(
    source: ReportSource, period: Period, conversation_groups: list[tuple[Any, ...]], sent: list[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """One row per event name: how many of the period's conversations reached it (a funnel)."""
    total = sum(int(row[2]) for row in conversation_groups)
    converted = dict(queries.converted_by_event(source, period))
    groups: dict[str, Group] = {}
    for _, _, _, name, currency, _, count, value, first, last in sent:
        group = groups.get(name) or groups.setdefault(
            name, Group(conversations=total, converted=int(converted.get(name, 0))))
        group.add_events(name, count, currency, value)
        group.seen(first, last)
    rows = [{"event_name": name, **group.metrics()} for name, group in groups.items()]
    rows.sort(key=lambda r: (-r["converted_conversations"], -sum(r["events"].values()), r["event_name"]))
    return rows


def _day(bucket: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(int(bucket) * BUCKET_SECONDS, tz).strftime("%Y-%m-%d")


def _by_day(source: ReportSource, period: Period, tz: tzinfo) -> list[dict[str, Any]]:
    groups: dict[str, Group] = {}
    for _, bucket, conversations, converted in queries.conversation_buckets(source, period):
        group = _group(groups, _day(bucket, tz))
        group.conversations += int(conversations)
        group.converted += int(converted)
        group.seen(int(bucket) * BUCKET_SECONDS, int(bucket) * BUCKET_SECONDS)
    for _, name, currency, bucket, count, value in queries.event_buckets(source, period):
        group = _group(groups, _day(bucket, tz))
        group.add_events(name, count, currency, value)
        group.seen(int(bucket) * BUCKET_SECONDS, int(bucket) * BUCKET_SECONDS)
    return [{"day": day, **groups[day].metrics()} for day in sorted(groups)]


def _coverage(source: ReportSource, period: Period, scan: Iterable[tuple[Any, ...]]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    with_ad = 0
    by_keys: Counter[str | None] = Counter()  # sent events per set of match keys (a few sets)
    for state, _, ad_id, _, _, match_keys, count, _, _, _ in scan:
        counts[state] += int(count)
        if state != "sent":
            continue
        if ad_id is not None:
            with_ad += int(count)
        by_keys[match_keys] += int(count)
    known = 0
    carried: Counter[str] = Counter()
    for match_keys, count in by_keys.items():
        if match_keys is not None:  # NULL: sent before the report facts existed
            known += count
            for key in filter(None, match_keys.split(",")):
                carried[key] += count
    keys = [*HASHED_FIELDS, *sorted(set(carried) - set(HASHED_FIELDS))]
    return {
        "events_sent": counts["sent"],
        "with_ad": with_ad,
        "unattributed": queries.unattributed_in(source, period),
        "rejected": counts["rejected"],
        "uncertain": counts["uncertain"],
        # Shares among the sent events whose facts are known (those sent since they are kept).
        "match_keys": {key: round(carried[key] / known, 4) if known else 0.0 for key in keys},
    }


def _runs(source: ReportSource, period: Period) -> list[dict[str, Any]]:
    runs = []
    for row in queries.last_runs(source, period, RUNS_SHOWN):
        run = dict(zip(queries.RUN_COLUMNS, row, strict=True))
        run["started_at"] = iso_z(run["started_at"])
        run["ended_at"] = iso_z(run["ended_at"])
        run["inputs"] = json.loads(run["inputs"])
        runs.append(run)
    return runs


def _series(source: ReportSource, period: Period, tz: tzinfo, top: list[str]) -> list[dict[str, Any]]:
    """Per (ad, day): sent events, value per currency, conversations and converted ones; for the
    `top` ads, the ad-unknown events (ad_id None) and the other ads together (ad_id "")."""
    cells: dict[tuple[str | None, str], dict[str, Any]] = {}

    def cell(ad_id: str | None, day: str) -> dict[str, Any]:
        return cells.setdefault((ad_id, day), {"ad_id": ad_id, "day": day, "events": 0, "value": {},
                                               "conversations": 0, "converted_conversations": 0})

    def add(target: dict[str, Any], count: int, currency: str | None, value: Any, sign: int = 1) -> None:
        target["events"] += sign * int(count)
        if currency and value is not None:
            target["value"][currency] = round(target["value"].get(currency, 0.0) + sign * float(value), 2)

    for _, _, currency, bucket, count, value in queries.event_buckets(source, period):
        add(cell("", _day(bucket, tz)), count, currency, value)
    for ad_id, _, currency, bucket, count, value in queries.event_buckets(source, period, top):
        day = _day(bucket, tz)
        add(cell(ad_id, day), count, currency, value)
        add(cell("", day), count, currency, value, -1)  # "other ads" is all minus those drawn alone
    wanted = set(top)
    for ad_id, bucket, conversations, converted in queries.conversation_buckets(source, period):
        target = cell(ad_id if ad_id is None or ad_id in wanted else "", _day(bucket, tz))
        target["conversations"] += int(conversations)
        target["converted_conversations"] += int(converted)
    return [cells[key] for key in sorted(cells, key=lambda k: (k[1], k[0] or ""))]
