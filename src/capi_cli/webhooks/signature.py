"""Checking `X-Hub-Signature-256`: HMAC-SHA256 of the raw body with the app secret.

Meta signs the bytes it sent, in which non-ASCII characters are escaped as `\\uXXXX` (lowercase
hex); a logger that decoded them changed the bytes, so that re-escaped form is tried too.
Re-serialized JSON (a parsed body) cannot be verified at all.
"""

from __future__ import annotations

import hashlib
import hmac

VALID = "valid"
INVALID = "invalid"
UNVERIFIABLE = "unverifiable"

_PREFIX = "sha256="


def check(raw_body: bytes | None, header: str | None, app_secret: str | None) -> str | None:
    """valid | invalid | unverifiable; None when there is no app secret to check with."""
    if not app_secret:
        return None
    if raw_body is None or not header:
        return UNVERIFIABLE
    given = header.strip()
    if given[: len(_PREFIX)].lower() == _PREFIX:
        given = given[len(_PREFIX) :]
    given_bytes = given.lower().encode("ascii", "replace")
    key = app_secret.encode("utf-8", "surrogatepass")
    for body in _candidates(raw_body):
        expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")
        if hmac.compare_digest(expected, given_bytes):
            return VALID
    return INVALID


def sign(raw_body: bytes, app_secret: str) -> str:
    """The header value Meta would send for this body (for tests and tools)."""
    return _PREFIX + hmac.new(app_secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()


def meta_escaped(text: str) -> str:
    """Non-ASCII characters as Meta writes them: `\\uXXXX`, lowercase hex, surrogate pairs beyond BMP."""
    out = []
    for char in text:
        code = ord(char)
        if code < 0x80:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    return "".join(out)


def _candidates(raw_body: bytes) -> list[bytes]:
    candidates = [raw_body]
    if not raw_body.isascii():
        try:
            decoded = raw_body.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return candidates
        candidates.append(meta_escaped(decoded).encode("ascii"))
    return candidates
