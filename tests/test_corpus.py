"""The hostile-input corpus (tests/corpus/manifest.yaml): every file ends in its documented exit code
and messages, as one short line per problem, never a traceback, in bounded time and memory, with
nothing written to the ledger but the referrals of the readable records.

`capi` runs as a subprocess so that a hang is killed by the timeout and a memory blow-up by the
1 GiB address-space limit, as they would be under cron.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

CORPUS = Path(__file__).parent / "corpus"
CASES: list[dict[str, Any]] = yaml.safe_load((CORPUS / "manifest.yaml").read_text(encoding="utf-8"))
MEMORY_LIMIT = 1 << 30
TIME_LIMIT = 20
MAX_STDERR_LINE = 600  # path + one 300-character message: never a 20 MB value echoed back
MAX_STDERR_LINES = 40  # send prints at most 20 problems; extract at most 100 unreadable inputs
WABA = "104123456789012"


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _wa_delivery(clid: str, body: str = "hi") -> str:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": "33612345678"}],
        "messages": [{
            "from": "33612345678", "id": f"wamid.{clid}", "timestamp": "1767484800", "type": "text",
            "text": {"body": body},
            "referral": {"source_id": "120200000", "source_type": "ad", "ctwa_clid": clid},
        }],
    }
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]})


def _generate(name: str, where: Path) -> Path:
    """Big inputs are written at test time, not committed."""
    path = where / name
    header = "event_name,event_time,ctwa_clid,value,currency\n"
    ok = f"Purchase,{int(time.time())},ARAkOK,1,USD\n"
    if name == "field_20mb.csv":
        path.write_text(header + 'Purchase,,"' + "x" * (20 << 20) + '",1,USD\n' + ok, encoding="utf-8")
    elif name == "million_columns.csv":
        with path.open("w", encoding="utf-8") as out:
            out.write(",".join(f"c{i}" for i in range(1_000_000)) + "\n")
            out.write("," * 999_999 + "\n")
    elif name == "field_20mb.yaml":
        path.write_text('- event_name: Purchase\n  ctwa_clid: "' + "x" * (20 << 20) + '"\n', encoding="utf-8")
    elif name == "huge_array.json":
        messages = json.dumps([{"from": "1", "id": "m"}] * 200_000)
        path.write_text('{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": '
                        '"messages", "value": {"messaging_product": "whatsapp", "messages": ' + messages + "}}]}]}\n")
    elif name == "field_20mb.ndjson":
        path.write_text(_wa_delivery("ARAkW7", "x" * (20 << 20)) + "\n", encoding="utf-8")
    elif name == "hostile_dir":
        (path / "nested").mkdir(parents=True)
        shutil.copy(CORPUS / "webhooks" / "garbage.bin", path / "a.bin")
        shutil.copy(CORPUS / "webhooks" / "utf8_bom.json", path / "nested" / "b.json")
        (path / ".hidden.json").write_bytes(b"\x00 hidden files are not read")
        (path / "nested" / "empty.ndjson").write_bytes(b"")
    else:  # pragma: no cover - a manifest typo
        raise AssertionError(f"unknown generated input {name}")
    return path


def _materialize(entry: str, where: Path) -> Path:
    kind, _, name = entry.partition(":")
    if kind == "@dir":
        (where / name).mkdir()
        return where / name
    if kind == "@missing":
        return where / name
    if kind == "@gen":
        return _generate(name, where)
    source = CORPUS / entry
    now = int(time.time())
    data = source.read_bytes()
    for key, value in ((b"{{NOW_MS}}", now * 1000), (b"{{NOW_US}}", now * 1_000_000), (b"{{NOW}}", now)):
        data = data.replace(key, str(value).encode())
    target = where / source.name
    target.write_bytes(data)
    return target


def _command(case: dict[str, Any], path: Path, work: Path) -> list[str]:
    return [*_base_command(case, path, work), *case.get("args", [])]


def _base_command(case: dict[str, Any], path: Path, work: Path) -> list[str]:
    base = [sys.executable, "-m", "capi_cli"]
    if case["command"] == "validate":
        return [*base, "validate", str(path), "--format", "json"]
    if case["command"] == "dry-run":
        return [*base, "send", "--file", str(path), "--dry-run", "--format", "json", "--no-progress",
                "-o", str(work / "payload.ndjson")]
    assert case["command"] == "extract", case
    return [*base, "extract-referral", str(path), "--format", "json"]


def _referral_rows(home: Path) -> int:
    ledger = home / "ledger.sqlite3"
    if not ledger.exists():
        return 0
    with sqlite3.connect(ledger) as conn:
        return int(conn.execute("SELECT count(*) FROM referrals").fetchone()[0])


def _case_id(case: dict[str, Any]) -> str:
    extra = "".join(case.get("args", []))
    return f"{case['command']}-{case['file'].split('/')[-1].lstrip('@')}{extra}"


def test_manifest_covers_every_corpus_file() -> None:
    listed = {c["file"] for c in CASES}
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file() and p.name != "manifest.yaml"}
    assert on_disk <= listed, f"corpus files without a manifest entry: {sorted(on_disk - listed)}"
    assert len(CASES) >= 40
    assert sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file()) < 1 << 20


@pytest.mark.timeout(TIME_LIMIT + 15)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_corpus_case(case: dict[str, Any], tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    path = _materialize(case["file"], work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_")}
    env.update(
        CAPI_HOME=str(home), CAPI_DATASET_ID="1234567890", CAPI_ACCESS_TOKEN="corpus-token",
        CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID=WABA,
        CAPI_GRAPH_URL="http://127.0.0.1:9",  # discard port: nothing may be sent anywhere
        COLUMNS="200", NO_COLOR="1",
    )
    started = time.monotonic()
    proc = subprocess.run(
        _command(case, path, work), cwd=work, env=env, capture_output=True, timeout=TIME_LIMIT,
        preexec_fn=_limit_memory, stdin=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    where = f"{case['file']} ({elapsed:.1f}s)\nstderr:\n{err[-3000:]}"

    assert "Traceback" not in out + err, where
    assert proc.returncode == case["exit"], where
    assert re.search(case["stderr"], err, re.MULTILINE), where
    if "output" in case:
        assert re.search(case["output"], out + err, re.MULTILINE), where
    lines = err.splitlines()
    assert len(lines) <= MAX_STDERR_LINES, where
    assert all(len(line) <= MAX_STDERR_LINE for line in lines), where
    # The yaml cases carry `!!python/...` tags that would run `touch PWNED` if ever constructed.
    assert not (work / "PWNED").exists()

    expected = case.get("result", {})
    if case["command"] == "validate":
        # validate never creates the ledger (it only reads referrals when a ledger exists).
        assert not (home / "ledger.sqlite3").exists(), where
        if case["exit"] != 2:
            report = json.loads(out)
            for key in ("records", "valid", "invalid"):
                if key in expected:
                    assert report[key] == expected[key], (key, where)
            if "codes" in expected:
                assert {p["code"] for p in report["problems"]} == set(expected["codes"]), where
    elif case["command"] == "dry-run":
        assert not (home / "ledger.sqlite3").exists(), where
        if case["exit"] != 2:
            summary = json.loads(out)
            assert summary["dry_run"] is True
            for key in ("read", "invalid", "sent"):
                if key in expected:
                    assert summary[key] == expected[key], (key, where)
            payload = (work / "payload.ndjson").read_text(encoding="utf-8").splitlines()
            assert len(payload) == summary["sent"]
            assert all(json.loads(line)["user_data"]["ctwa_clid"].isprintable() for line in payload)
    else:
        records = json.loads(out) if case["exit"] != 2 else []
        assert len(records) == expected.get("referrals", 0), where
        if "clids" in expected:
            assert [r["ctwa_clid"] or r["ad_id"] for r in records] == expected["clids"], where
        # Only the referrals of readable records reach the ledger.
        assert _referral_rows(home) == expected.get("referrals", 0), where
