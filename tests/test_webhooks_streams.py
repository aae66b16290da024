"""Document streams in any mix: one-line and pretty-printed documents, arrays and NDJSON (SPEC §3)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from capi_cli.webhooks import ExtractStats, Referral, Unreadable, extract

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
DOCS = [
    json.loads((FIXTURES / name).read_text())
    for name in (
        "instagram/message_referral.json",
        "whatsapp/cloud_two_entries.json",
        "messenger/message_referral.json",
        "whatsapp/bsuid_username.json",
    )
]


def run(data: str) -> tuple[list[Referral], list[Unreadable]]:
    items = list(extract(["-"], stdin=io.BytesIO(data.encode()), stats=ExtractStats()))
    return [i for i in items if isinstance(i, Referral)], [i for i in items if isinstance(i, Unreadable)]


def keys(found: list[Referral]) -> list[tuple[str | None, ...]]:
    return [(r.channel, r.user_id, r.ctwa_clid, r.ad_id, r.message_id) for r in found]


def one_by_one() -> list[tuple[str | None, ...]]:
    found: list[Referral] = []
    for doc in DOCS:
        got, bad = run(json.dumps(doc))
        assert not bad
        found += got
    return keys(found)


LAYOUTS = {
    "one-line first": lambda i, d: json.dumps(d, indent=2 if i % 2 else None),
    "pretty first": lambda i, d: json.dumps(d, indent=None if i % 2 else 2),
    "indent 0": lambda i, d: json.dumps(d, indent=0 if i % 2 else None),
    "tabs and crlf": lambda i, d: json.dumps(d, indent="\t").replace("\n", "\r\n") if i % 2 else json.dumps(d),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mixed_stream_gives_the_records_of_the_documents_read_one_by_one(layout: str) -> None:
    text = "\n".join(LAYOUTS[layout](i, d) for i, d in enumerate(DOCS)) + "\n"
    found, bad = run(text)
    assert not bad
    assert keys(found) == one_by_one()
    assert len(found) >= 4


def test_array_spanning_lines_between_ndjson_lines() -> None:
    text = (
        json.dumps(DOCS[0])
        + "\n[\n"
        + ",\n".join(json.dumps(d, indent=2) for d in DOCS[1:3])
        + "\n]\n"
        + json.dumps(DOCS[3])
        + "\n"
    )
    found, bad = run(text)
    assert not bad and keys(found) == one_by_one()


def test_documents_concatenated_across_lines_without_separators() -> None:
    text = "".join(json.dumps(d, indent=1) for d in DOCS)  # `}{` joins one to the next
    found, bad = run(text)
    assert not bad and keys(found) == one_by_one()


def test_broken_pretty_document_is_reported_at_its_line_and_reading_resumes() -> None:
    broken = json.dumps(DOCS[1], indent=2).replace('"changes"', '"changes" 7', 1)
    text = json.dumps(DOCS[0]) + "\n" + broken + "\n" + json.dumps(DOCS[2], indent=2) + "\n" + json.dumps(DOCS[3])
    found, bad = run(text)
    assert keys(found) == keys(run("\n".join(json.dumps(d) for d in [DOCS[0], DOCS[2], DOCS[3]]))[0])
    line = 1 + next(i for i, t in enumerate(broken.splitlines(), 1) if '"changes" 7' in t)
    assert [(b.source, b.line) for b in bad] == [("<stdin>", line)]
    assert bad[0].reason.startswith("invalid JSON")


@pytest.mark.parametrize("cut", [25, 60, 61, 120])
def test_truncated_log_line_does_not_swallow_the_next_documents(cut: int) -> None:
    """A log line cut anywhere (inside a string, after `:` or `[`) is one unreadable line."""
    lines = [json.dumps(d) for d in DOCS]
    lines[1] = lines[1][:cut]
    found, bad = run("\n".join(lines) + "\n" + json.dumps(DOCS[1], indent=2) + "\n")
    assert [b.line for b in bad] == [2]
    assert "truncated JSON" in bad[0].reason
    assert keys(found) == keys(run("\n".join(json.dumps(d) for d in [DOCS[0], DOCS[2], DOCS[3], DOCS[1]]))[0])


def test_truncated_last_document_and_unclosed_array() -> None:
    found, bad = run(json.dumps(DOCS[0]) + "\n" + json.dumps(DOCS[1], indent=2)[:200])
    assert len(found) == 1 and [(b.line, b.reason.split(":")[0]) for b in bad] == [(2, "truncated JSON")]
    found, bad = run("[\n" + json.dumps(DOCS[0]) + ",\n")
    assert len(found) == 1 and bad[0].reason == "truncated JSON: array not closed" and bad[0].line == 1


def test_garbage_between_documents_is_one_unreadable_line() -> None:
    text = json.dumps(DOCS[0], indent=2) + "\n}}}garbage{{\n" + json.dumps(DOCS[2], indent=2) + "\nnot json at all\n"
    found, bad = run(text)
    assert [k[0] for k in keys(found)] == ["instagram", "messenger"]
    assert len(bad) == 2 and all(b.reason.startswith("invalid JSON") for b in bad)


def test_form_bodies_mixed_with_json() -> None:
    form = (FIXTURES / "twilio/inbound_form.txt").read_text().strip()
    text = json.dumps(DOCS[0], indent=2) + "\n" + form + "\n" + json.dumps(DOCS[2]) + "\n"
    found, bad = run(text)
    assert not bad and [k[0] for k in keys(found)] == ["instagram", "whatsapp", "messenger"]


def test_a_document_over_the_size_limit_is_reported_once_and_the_next_one_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from capi_cli.webhooks import documents

    big = json.dumps(DOCS[1], indent=2)
    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", len(big) // 2)
    found, bad = run(big + "\n" + json.dumps(DOCS[2], indent=2) + "\n" + json.dumps(DOCS[3]) + "\n")
    assert [(b.line, b.reason.split(";")[0]) for b in bad] == [(1, "document larger than 0 MB")]
    assert keys(found) == keys(run(json.dumps(DOCS[2]) + "\n" + json.dumps(DOCS[3]))[0])
