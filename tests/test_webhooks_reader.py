"""Input detection: layouts, encodings, broken input, stdin, directories, compressed logs."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from capi_cli.errors import UsageError
from capi_cli.webhooks import ExtractStats, Referral, Unreadable, extract
from capi_cli.webhooks.reader import read_stream

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
IG = json.loads((FIXTURES / "instagram/igme_link.json").read_text())
# The same delivery as an ad's referral: an ig.me link alone is no ad, so it would give no record.
IG["entry"][0]["messaging"][0]["referral"] |= {"source": "ADS", "ad_id": "120211112222333"}


def delivery(user: str) -> dict:
    doc = json.loads(json.dumps(IG))
    doc["entry"][0]["messaging"][0]["sender"]["id"] = user
    return doc


def run(data: bytes, name: str = "dump") -> tuple[list[Referral], list[Unreadable], ExtractStats]:
    stats = ExtractStats()
    items = list(extract(["-"], stdin=io.BytesIO(data), stats=stats))
    return (
        [i for i in items if isinstance(i, Referral)],
        [i for i in items if isinstance(i, Unreadable)],
        stats,
    )


def users(found: list[Referral]) -> list[str | None]:
    return [r.user_id for r in found]


def test_single_document_pretty_printed() -> None:
    found, bad, _ = run(json.dumps(delivery("1"), indent=4).encode())
    assert users(found) == ["1"] and not bad


def test_ndjson_with_crlf_blank_lines_and_bom() -> None:
    data = "\ufeff" + "\r\n".join(json.dumps(delivery(u)) for u in "123") + "\r\n\r\n"
    found, bad, _ = run(data.encode())
    assert users(found) == ["1", "2", "3"] and not bad
    assert [r.origin for r in found] == ["<stdin>:1", "<stdin>:2", "<stdin>:3"]


def test_several_documents_concatenated_on_one_line() -> None:
    found, bad, _ = run(b"".join(json.dumps(delivery(u)).encode() for u in "12") + b"\n")
    assert users(found) == ["1", "2"] and not bad


def test_array_one_element_per_line() -> None:
    data = "[\n" + ",\n".join(json.dumps(delivery(u)) for u in "123") + "\n]\n"
    found, bad, _ = run(data.encode())
    assert [r.origin for r in found] == ["<stdin>:2", "<stdin>:3", "<stdin>:4"] and not bad


def test_ndjson_line_holding_an_array() -> None:
    found, _, _ = run(
        (json.dumps([delivery("1"), delivery("2")]) + "\n" + json.dumps(delivery("3"))).encode()
    )
    assert users(found) == ["1", "2", "3"]


def test_broken_lines_in_the_middle_of_a_log_are_reported_and_skipped() -> None:
    lines = [json.dumps(delivery(str(i))) for i in range(1, 7)]
    lines[1] = lines[1][:40]  # truncated by a crash
    lines[3] = lines[3].replace('"', "'", 4)  # not JSON
    found, bad, stats = run(("\n".join(lines) + "\n").encode())
    assert users(found) == ["1", "3", "5", "6"]
    assert [(b.source, b.line) for b in bad] == [("<stdin>", 2), ("<stdin>", 4)]
    assert stats.unreadable == 2


def test_broken_first_line_of_a_log() -> None:
    lines = ['{"object": "instagram", "entry": [', *(json.dumps(delivery(u)) for u in "1234")]
    found, bad, _ = run("\n".join(lines).encode())
    assert users(found) == ["1", "2", "3", "4"]
    assert [b.line for b in bad] == [1]


def test_bad_utf8_line_is_reported_with_its_line() -> None:
    data = (
        json.dumps(delivery("1")).encode()
        + b"\n"
        + b'{"object": "page\xff\xfe"}\n'
        + json.dumps(delivery("2")).encode()
    )
    found, bad, _ = run(data)
    assert users(found) == ["1", "2"]
    assert len(bad) == 1 and bad[0].line == 2 and "not UTF-8" in bad[0].reason


def test_broken_multiline_document_then_a_good_one() -> None:
    good = json.dumps(delivery("2"), indent=2)
    broken = json.dumps(delivery("1"), indent=2).replace('"sender"', '"sender" "x"', 1)
    found, bad, _ = run((broken + "\n" + good + "\n").encode())
    assert users(found) == ["2"]
    assert len(bad) == 1 and (bad[0].line or 0) > 1


def test_binary_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    stats = ExtractStats()
    items = list(extract([str(path)], stats=stats))
    assert [str(i) for i in items] == [f"{path}:1: binary file, not a webhook dump"]


def test_gzip_log_is_read_transparently(tmp_path: Path) -> None:
    path = tmp_path / "hooks.ndjson.gz"
    path.write_bytes(gzip.compress("\n".join(json.dumps(delivery(u)) for u in "12").encode()))
    found = [i for i in extract([str(path)]) if isinstance(i, Referral)]
    assert users(found) == ["1", "2"]


def test_truncated_gzip_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "hooks.ndjson.gz"
    path.write_bytes(
        gzip.compress(("\n".join(json.dumps(delivery(str(u))) for u in range(200))).encode())[:300]
    )
    items = list(extract([str(path)]))
    assert any(isinstance(i, Unreadable) for i in items)


def test_empty_and_whitespace_inputs() -> None:
    assert run(b"") == ([], [], run(b"")[2])
    found, bad, _ = run(b"\n\n   \n")
    assert not found and not bad


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no-such.json: no such file"):
        extract([str(tmp_path / "no-such.json")])


def test_unreadable_file_permission(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    path.write_text("{}")
    path.chmod(0)
    try:
        if path.stat().st_mode and open_fails(path):
            items = list(extract([str(path)]))
            assert len(items) == 1 and "cannot read" in str(items[0])
    finally:
        path.chmod(0o600)


def open_fails(path: Path) -> bool:
    try:
        path.open("rb").close()
    except OSError:
        return True
    return False  # running as root


def test_directory_recursive_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "b" / "c" / "2.json").write_text(json.dumps(delivery("2")))
    (tmp_path / "1.json").write_text(json.dumps(delivery("1")))
    (tmp_path / ".git" / "x.json").write_text(json.dumps(delivery("9")))
    (tmp_path / ".hidden.json").write_text(json.dumps(delivery("9")))
    stats = ExtractStats()
    found = [i for i in extract([str(tmp_path)], stats=stats) if isinstance(i, Referral)]
    assert users(found) == ["1", "2"] and stats.files == 2


def test_stdin_mixed_with_files(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(delivery("1")))
    found = [
        i
        for i in extract(
            [str(tmp_path / "a.json"), "-"], stdin=io.BytesIO(json.dumps(delivery("2")).encode())
        )
        if isinstance(i, Referral)
    ]
    assert users(found) == ["1", "2"]


def test_base64_api_gateway_body() -> None:
    import base64

    event = {
        "headers": {"content-type": "application/json"},
        "isBase64Encoded": True,
        "body": base64.b64encode(json.dumps(delivery("7")).encode()).decode(),
    }
    found, _, _ = run(json.dumps(event).encode())
    assert users(found) == ["7"]


def test_har_export() -> None:
    har = {
        "log": {
            "entries": [
                {
                    "request": {
                        "method": "POST",
                        "headers": [{"name": "Content-Type", "value": "application/json"}],
                        "postData": {"mimeType": "application/json", "text": json.dumps(delivery("8"))},
                    }
                }
            ]
        }
    }
    found, _, _ = run(json.dumps(har).encode())
    assert users(found) == ["8"]


def test_json_string_document_line() -> None:
    found, _, _ = run(json.dumps(json.dumps(delivery("5"))).encode())
    assert users(found) == ["5"]


def test_non_webhook_json_is_counted_as_unrecognised_not_unreadable() -> None:
    found, bad, stats = run(b'{"order": 1}\n[1, 2]\n"text"\n42\n')
    assert not found and not bad and stats.deliveries == 0 and stats.unrecognised == 4


def test_deep_nesting_is_unreadable_not_a_crash() -> None:
    found, bad, _ = run(b"[" * 100000 + b"]" * 100000)
    assert not found and len(bad) == 1 and "nested" in bad[0].reason


def test_read_stream_yields_documents_with_lines() -> None:
    docs = list(read_stream("f", io.BytesIO(b'\n{\n"a": 1}\n\n{"b":\n 2}\n')))
    assert [(getattr(d, "value", None), d.line) for d in docs] == [({"a": 1}, 2), ({"b": 2}, 5)]
