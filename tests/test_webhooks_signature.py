"""X-Hub-Signature-256 checks: valid, tampered, missing header, re-escaped non-ASCII, no raw body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capi_cli.errors import UsageError
from capi_cli.webhooks import Referral, extract
from capi_cli.webhooks.signature import INVALID, UNVERIFIABLE, VALID, check, meta_escaped, sign

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
SECRET = "6f1e2d3c4b5a69788796a5b4c3d2e1f0"


def verdicts(**options: Any) -> dict[str | None, str | None]:
    found = [
        i for i in extract([str(FIXTURES / "wrappers/signed.ndjson")], **options) if isinstance(i, Referral)
    ]
    return {r.message_id: r.signature for r in found}


def test_each_delivery_gets_its_verdict() -> None:
    assert verdicts(app_secret=SECRET) == {
        "wamid.SIGNED0001": VALID,  # raw body as Meta sent it
        "wamid.SIGNED0002": VALID,  # logger decoded the \\u escapes; the re-escaped form verifies
        "wamid.SIGNED0003": INVALID,  # body tampered with after signing
        "wamid.SIGNED0004": UNVERIFIABLE,  # no X-Hub-Signature-256 header kept
        "wamid.SIGNED0005": UNVERIFIABLE,  # body kept only as parsed JSON
    }


def test_wrong_secret_makes_signed_bodies_invalid() -> None:
    assert verdicts(app_secret="another-secret")["wamid.SIGNED0001"] == INVALID


def test_without_app_secret_signature_is_null() -> None:
    assert set(verdicts().values()) == {None}


def test_require_valid_signature_drops_the_others() -> None:
    assert list(verdicts(app_secret=SECRET, require_valid_signature=True)) == [
        "wamid.SIGNED0001",
        "wamid.SIGNED0002",
    ]


def test_require_valid_signature_needs_a_secret() -> None:
    with pytest.raises(UsageError, match="app secret"):
        extract([str(FIXTURES)], require_valid_signature=True)


def test_check_basics() -> None:
    body = b'{"object":"page","entry":[]}'
    header = sign(body, "s3cret")
    assert check(body, header, "s3cret") == VALID
    assert check(body, header.upper().replace("SHA256=", "sha256="), "s3cret") == VALID
    assert check(body + b" ", header, "s3cret") == INVALID
    assert check(body, "sha256=nothex\u00e9", "s3cret") == INVALID
    assert check(body, None, "s3cret") == UNVERIFIABLE
    assert check(None, header, "s3cret") == UNVERIFIABLE
    assert check(body, header, None) is None


def test_meta_escaping_matches_json_ascii_escaping_in_lowercase() -> None:
    text = 'Şule 🎉 "çok"'
    assert meta_escaped(text) == json.dumps(text)[1:-1].replace('\\"', '"')
    assert meta_escaped("é") == "\\u00e9"
