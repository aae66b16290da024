"""Where a ledger lives: a file path or a `postgresql://` URL (LedgerRef, which a worker process
opens with ledger.open_ledger), and how to show it without its password.

Kept free of heavy imports: `config show` and `ledger path` use it without opening anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

POSTGRES_SCHEMES = ("postgresql://", "postgres://")

# `user:password@` in a URL's authority; libpq's keyword form (`password=...`) is masked too.
_URL_PASSWORD = re.compile(r"^(?P<head>[a-z]+://[^:/@]*):(?P<secret>[^@/]*)@", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<secret>[^&]*)", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'[^']*'|[^\s&]+)", re.IGNORECASE)
MASK = "***"


def is_postgres(location: str) -> bool:
    return location.strip().lower().startswith(POSTGRES_SCHEMES)


def mask_password(text: str) -> str:
    """`text` with any password in a PostgreSQL URL (or libpq keyword string) replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def shown(location: str) -> str:
    """The ledger's location as capi prints it anywhere (errors, `config show`, `ledger path`)."""
    return mask_password(location) if is_postgres(location) else location


BackendKind = Literal["sqlite", "postgres"]


@dataclass(frozen=True, slots=True)
class LedgerRef:
    """Which ledger: a SQLite file (`location` is its path) or a PostgreSQL URL."""

    kind: BackendKind
    location: str

    @classmethod
    def parse(cls, location: str) -> LedgerRef:
        return cls("postgres", location) if is_postgres(location) else cls("sqlite", location)

    @property
    def shown(self) -> str:
        """For output and errors: a password in the URL masked."""
        return shown(self.location)

    def exists(self) -> bool:
        """Whether there is something to read (a server is assumed to be there)."""
        return self.kind == "postgres" or Path(self.location).expanduser().exists()

    def __repr__(self) -> str:  # never the password, even in a traceback
        return f"LedgerRef({self.kind!r}, {self.shown!r})"
