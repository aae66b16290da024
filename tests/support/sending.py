"""Helpers for end-to-end send tests: an events CSV, the environment that points capi at the
Graph stand-in, and the invariant every delivery test checks."""

from __future__ import annotations

import csv
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from capi_cli.sandbox.server import GraphStandin

TOKEN = "EAAG-RECOGNISABLE-TOKEN-5f3c9a"
APP_SECRET = "APP-SECRET-RECOGNISABLE-77e1"
DATASET = "1234567890"
WABA = "104996122399160"


def write_events_csv(path: Path, n: int, *, prefix: str = "ev", event_name: str = "Purchase") -> list[str]:
    """n valid WhatsApp events with explicit ids; returns the ids."""
    ids = [f"{prefix}-{i:05d}" for i in range(n)]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["event_name", "event_id", "ctwa_clid", "phone", "email", "value", "currency"])
        for i, event_id in enumerate(ids):
            writer.writerow(
                [event_name, event_id, f"ARAkClid{i:05d}xyz", f"+9053212{i:05d}", f"buyer{i}@example.com",
                 f"{100 + i}.50", "TRY"]
            )
    return ids


def send_env(home: Path, graph_url: str, token: str = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_")}
    env.update(
        CAPI_HOME=str(home),
        CAPI_DATASET_ID=DATASET,
        CAPI_ACCESS_TOKEN=token,
        CAPI_GRAPH_URL=graph_url,
        CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID=WABA,
        COLUMNS="200",
        NO_COLOR="1",
    )
    return env


def ledger_states(home: Path) -> dict[str, str]:
    path = home / "ledger.sqlite3"
    if not path.exists():
        return {}
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT event_id, state FROM events"))


def assert_exactly_once(standin, home: Path, ids: list[str], event_name: str = "Purchase") -> None:
    """No event received twice; every event received by Meta or held `uncertain` in the ledger;
    and the ledger's `sent` matches what the stand-in counted."""
    assert standin.duplicates() == {}, f"received twice: {standin.duplicates()}"
    received = {event_id for (name, event_id) in standin.received if name == event_name}
    states = ledger_states(home)
    for event_id in ids:
        assert event_id in received or states.get(event_id) == "uncertain", (
            f"{event_id} lost: not received, ledger says {states.get(event_id)}"
        )
        if states.get(event_id) == "sent":
            assert event_id in received, f"{event_id}: ledger says sent, Meta never got it"


def check_exactly_once(
    standin: GraphStandin,
    home: Path,
    valid: Iterable[str],
    poison: Iterable[str] = (),
    *,
    resent: Iterable[str] = (),
    event_name: str = "Purchase",
) -> dict[str, str]:
    """The reliability invariant; returns the ledger's states.

    - no event received twice, unless it was deliberately resent (`resent`);
    - no valid event lost: received by Meta, or `uncertain` in the ledger;
    - the ledger matches what Meta saw: sent => received; rejected/failed => not received;
      nothing left in_flight after a run that ended.
    """
    resent = set(resent)
    states = ledger_states(home)
    doubled = {key: n for key, n in standin.received.items() if n > 1 and key[1] not in resent}
    assert doubled == {}, f"received twice: {doubled}"
    assert all(n <= 2 for n in standin.received.values())
    received = {event_id for (name, event_id) in standin.received if name == event_name}
    lost = [i for i in valid if i not in received and states.get(i) != "uncertain"]
    assert lost == [], f"lost (not received, not uncertain): {[(i, states.get(i)) for i in lost]}"
    for event_id, state in states.items():
        assert state != "in_flight", f"{event_id} left in_flight"
        if state == "sent":
            assert event_id in received, f"{event_id}: ledger says sent, Meta never got it"
        if state in ("rejected", "failed"):
            assert event_id not in received, f"{event_id}: ledger says {state}, Meta counted it"
    for event_id in poison:
        assert event_id not in received
        assert states.get(event_id) in ("rejected", "uncertain"), (event_id, states.get(event_id))
    return states
