"""The report's reads of the ledger, in portable SQL.

Standard SQL only (no SQLite functions): `?` placeholders, `CASE`, `COUNT(DISTINCT ...)`,
`EXISTS`, integer division of integer columns (`event_time / 900`), so a
PostgreSQL backend runs the same text (rewriting `?` to `%s`). Each read groups in the database
and returns few rows: a ledger of a million events is scanned once for the per-ad figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from capi_cli.ledger.schema import RUN_COUNTS

# Days are made of quarter hours, so a timezone with a :30 or :45 offset still cuts days right.
BUCKET_SECONDS = 900


class ReportSource(Protocol):
    """What the report needs of a ledger (capi_cli.ledger.Ledger, or a PostgreSQL one)."""

    def report_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class Period:
    since: int
    until: int
    dataset_id: str | None = None

    def events_where(self, alias: str = "") -> tuple[str, list[Any]]:
        """Events of the period (by event time) and dataset."""
        p = f"{alias}." if alias else ""
        sql = f"{p}event_time >= ? AND {p}event_time <= ?"
        params: list[Any] = [self.since, self.until]
        if self.dataset_id is not None:
            sql += f" AND {p}dataset_id = ?"
            params.append(self.dataset_id)
        return sql, params


def event_groups(source: ReportSource, period: Period) -> list[tuple[Any, ...]]:
    """(state, channel, ad_id, event_name, currency, match_keys, events, value, first, last) of
    the period's sent events, and (state, None, None, None, None, None, events, value, first, last)
    per state of its rejected and uncertain ones (the report counts them, nothing more). The sent
    ones are grouped in the order of the partial index events_by_ad (dataset first, so that its
    equality is answered there, and not by the event key's index: see schema.MIGRATIONS), so
    SQLite streams a million rows instead of sorting them; the others are few (index events_open).
    A ledger of several datasets read with none gives a row per dataset of a group: build adds
    them up, as it adds up the channels and match keys of an ad."""
    where, params = period.events_where()
    sent = source.report_query(
        "SELECT 'sent', channel, ad_id, event_name, currency, match_keys, COUNT(*), SUM(value), "
        f"MIN(event_time), MAX(event_time) FROM events WHERE state = 'sent' AND {where} "
        "GROUP BY dataset_id, ad_id, event_name, currency, match_keys, channel",
        params,
    )
    refused_or_unknown = source.report_query(
        "SELECT state, NULL, NULL, NULL, NULL, NULL, COUNT(*), SUM(value), MIN(event_time), MAX(event_time) "
        f"FROM events WHERE state IN ('rejected', 'uncertain') AND state != 'sent' AND {where} GROUP BY state",
        params,
    )
    return [*sent, *refused_or_unknown]


# A conversation is an ad referral: it names its ad, or (a WhatsApp post boosted as an ad) carries
# a click id. Referrals stored with --all-referrals that are neither are not conversations of ads.
_AD_REFERRAL = "(r.ad_id IS NOT NULL OR r.ctwa_clid IS NOT NULL)"


def _converted_test(period: Period) -> tuple[str, list[Any]]:
    """True for a referral `r` with a sent event up to the period's end (the covering index
    events_converted answers it alone)."""
    sql = ("EXISTS (SELECT 1 FROM events e WHERE e.state = 'sent' AND e.referral_key = r.message_key "
           "AND e.channel = r.channel AND e.event_time <= ?")
    params: list[Any] = [period.until]
    if period.dataset_id is not None:
        sql += " AND e.dataset_id = ?"
        params.append(period.dataset_id)
    return sql + ")", params


def conversation_groups(source: ReportSource, period: Period) -> list[tuple[Any, ...]]:
    """(channel, ad_id, conversations, converted, first, last, headline, source_url) per ad, for
    the conversations the period selects by the referral's time."""
    converted, params = _converted_test(period)
    return source.report_query(
        f"SELECT r.channel, r.ad_id, COUNT(*), SUM(CASE WHEN {converted} THEN 1 ELSE 0 END), MIN(r.ts), "
        "MAX(r.ts), MAX(r.headline), MAX(r.source_url) FROM referrals r "
        f"WHERE r.ts >= ? AND r.ts <= ? AND {_AD_REFERRAL} GROUP BY r.channel, r.ad_id",
        [*params, period.since, period.until],
    )


def conversation_buckets(source: ReportSource, period: Period) -> list[tuple[Any, ...]]:
    """(ad_id, quarter hour, conversations, converted) over time."""
    converted, params = _converted_test(period)
    bucket = f"r.ts / {BUCKET_SECONDS}"
    return source.report_query(
        f"SELECT r.ad_id, {bucket}, COUNT(*), SUM(CASE WHEN {converted} THEN 1 ELSE 0 END) FROM referrals r "
        f"WHERE r.ts >= ? AND r.ts <= ? AND {_AD_REFERRAL} GROUP BY r.ad_id, {bucket}",
        [*params, period.since, period.until],
    )


def event_buckets(source: ReportSource, period: Period, ads: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
    """(ad_id, event_name, currency, quarter hour, events, value) of the sent events over time: for
    the `ads` named (and the ad-unknown events), else for all ads together (ad_id NULL): per ad for
    every ad would be a row per event on a large ledger."""
    where, params = period.events_where()
    bucket = f"event_time / {BUCKET_SECONDS}"
    if ads is None:
        return source.report_query(
            f"SELECT NULL, event_name, currency, {bucket}, COUNT(*), SUM(value) FROM events "
            f"WHERE {where} AND state = 'sent' GROUP BY event_name, currency, {bucket}",
            params,
        )
    named = f" OR ad_id IN ({','.join('?' * len(ads))})" if ads else ""
    return source.report_query(
        f"SELECT ad_id, event_name, currency, {bucket}, COUNT(*), SUM(value) FROM events "
        f"WHERE {where} AND state = 'sent' AND (ad_id IS NULL{named}) "
        f"GROUP BY ad_id, event_name, currency, {bucket}",
        [*params, *ads],
    )


def converted_by_event(source: ReportSource, period: Period) -> list[tuple[Any, ...]]:
    """(event_name, conversations of the period with a sent event of that name)."""
    sql = ("SELECT e.event_name, COUNT(DISTINCT r.channel || ' ' || r.message_key) FROM events e "
           "JOIN referrals r ON r.channel = e.channel AND r.message_key = e.referral_key "
           "WHERE e.state = 'sent' AND e.event_time <= ? AND r.ts >= ? AND r.ts <= ?")
    params: list[Any] = [period.until, period.since, period.until]
    if period.dataset_id is not None:
        sql += " AND e.dataset_id = ?"
        params.append(period.dataset_id)
    return source.report_query(sql + " GROUP BY e.event_name", params)


RUN_COLUMNS = ("run_id", "started_at", "ended_at", "dataset_id", "inputs", *RUN_COUNTS, "exit_code")


def last_runs(source: ReportSource, period: Period, limit: int) -> list[tuple[Any, ...]]:
    """The last runs that started by the period's end (not bounded by its start: a cron job
    that stopped running, or fails every night, shows whatever the period)."""
    sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE started_at <= ?"
    params: list[Any] = [period.until + 1]
    if period.dataset_id is not None:
        sql += " AND dataset_id = ?"
        params.append(period.dataset_id)
    return source.report_query(sql + f" ORDER BY started_at DESC LIMIT {int(limit)}", params)


def unattributed_in(source: ReportSource, period: Period) -> int:
    """Unattributed events (never sent, so only the runs count them) of the runs in the period."""
    sql = "SELECT SUM(unattributed) FROM runs WHERE started_at >= ? AND started_at <= ?"
    params: list[Any] = [period.since, period.until + 1]
    if period.dataset_id is not None:
        sql += " AND dataset_id = ?"
        params.append(period.dataset_id)
    rows = source.report_query(sql, params)
    return int(rows[0][0] or 0) if rows else 0
