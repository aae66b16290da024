"""The short way a re-run skips events already sent (Stager.stage_chunk: FieldMapper.map_row_keys
and EventBuilder.key) finds exactly the key the full head finds. A key that differed would skip an
event never sent, or send one twice, so this is checked on generated headers, rows, --map and --set."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_cli.events.build import EventBuilder
from capi_cli.events.fields import FieldMapper

NOW = int(time.time())
NAMES = ["event_name", "Event", "EVENT NAME", "event-name", "event_id", "Event ID", "order_id", "order id",
         "ORDER_ID", "custom_data.order_id", "user_data.event_id", "email", "ctwa_clid", "event_time", "value",
         "colour", "", "evento", "ref"]
CELLS = st.one_of(
    st.sampled_from(["Purchase", " purchase ", "PURCHASE", "LeadSubmitted", "leadsubmitted\t", "Bogus", "", " ",
                     "\t", "o-1", "o-1|o-2", " o-3 ", "|", "e-7", "ARAk1", str(NOW - 60), "a@b.co"]),
    st.text(max_size=6),
)
MAPS = st.one_of(st.none(), st.dictionaries(st.sampled_from(["ref", "evento", "colour"]),
                                            st.sampled_from(["order_id", "event_id", "event_name", None]), max_size=2))
SETS = st.dictionaries(st.sampled_from(["event_name", "event_id", "order_id", "currency", "custom_data.x"]),
                       st.sampled_from(["Purchase", "Contact", "s-1", "USD", " ", "ord-9"]), max_size=3)


def _builder() -> EventBuilder:
    settings_ = SimpleNamespace(default_country="US", timezone="UTC", ig_account_field=None, channel="whatsapp",
                                currency=None, whatsapp_business_account_id="1", page_id=None, ig_account_id=None)
    return EventBuilder(settings_, now=NOW, window_seconds=7 * 86400)


@given(st.lists(st.sampled_from(NAMES), min_size=1, max_size=8), st.data(), MAPS, SETS)
@settings(max_examples=400, deadline=None)
def test_the_short_key_is_the_head_key_whenever_there_is_one(
    header: list[str], data: st.DataObject, mapping: dict[str, Any] | None, sets: dict[str, Any]
) -> None:
    row = data.draw(st.lists(CELLS, min_size=len(header), max_size=len(header)))
    mapper = FieldMapper(mapping, sets)
    builder = _builder()
    record, unknown = mapper.map_row_keys(header, row)
    key = builder.key(record)
    full, full_unknown, _ = mapper.map_row(header, row)
    assert unknown == full_unknown
    assert record == {k: v for k, v in full.items() if k in ("event_name", "event_id", "order_id")}
    if key is not None:
        head = builder.head(full, [])
        assert (head.event_name, head.event_id) == key


def test_a_rerun_of_rows_with_ids_reads_no_more_than_their_names_and_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sent rows that carry an event_id or order_id are skipped without their head (time, channel)
    or anything else being read; the others still are, and rows whose id the head derives are still
    skipped when sent."""
    from capi_cli.config import load_settings
    from capi_cli.delivery.engine import LedgerSkip
    from capi_cli.events.build import derive_event_id
    from capi_cli.events.pipeline import BuiltEvent, iter_events
    from capi_cli.ledger import Ledger, PendingEvent

    monkeypatch.setenv("CAPI_WORKERS", "0")
    rows = ["event_name,event_time,order_id,ctwa_clid,whatsapp_business_account_id,value,currency"]
    rows += [f"Purchase,{NOW - 60},o-{i},ARAkClid{i},104996122399160,9.5,USD" for i in range(1000)]
    rows += [f"Purchase,{NOW - 60},,ARAkClidX{i},104996122399160,9.5,USD" for i in range(10)]  # ids from time + user
    (tmp_path / "orders.csv").write_text("\n".join(rows) + "\n")
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    ids = [derive_event_id("Purchase", "order", f"o-{i}") for i in range(0, 1000, 2)]
    heads = []
    settings_ = load_settings(env={"CAPI_HOME": str(tmp_path)})
    # the ids of the last ten rows, as the head derives them
    builder = EventBuilder(settings_, now=NOW, window_seconds=7 * 86400)
    timed = [builder.head({"event_name": "Purchase", "event_time": str(NOW - 60), "ctwa_clid": f"ARAkClidX{i}",
                           "whatsapp_business_account_id": "104996122399160", "value": "9.5", "currency": "USD"},
                          []).event_id for i in range(10)]
    sent = [PendingEvent("Purchase", event_id, NOW - 60) for event_id in ids + timed[:5]]
    ledger.begin_batch("42", "b1", sent)
    ledger.settle("42", "b1", [(e.event_name, e.event_id) for e in sent], "sent")
    real_head = EventBuilder.head
    monkeypatch.setattr(EventBuilder, "head", lambda self, record, errors: heads.append(1) or real_head(self, record, errors))
    skip = LedgerSkip(ledger, "42")
    items = list(iter_events([tmp_path / "orders.csv"], settings_, skip=skip))
    built = [e for e in items if isinstance(e, BuiltEvent)]
    assert built, items[:3]
    assert len(built) == 500 + 5
    assert skip.skipped == 500 + 5
    assert len(heads) == 500 + 10  # the unsent rows with ids, and every row whose id only the head knows
