"""Creating and checking the ledger file itself.

A damaged file must never pass for a new, empty ledger: that would send every event again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from capi_cli.errors import SetupError
from capi_cli.ledger.schema import MIGRATIONS, split_sql, sqlite_sql


def _create_private(path: Path) -> None:
    """Create the file 0600 whatever the umask, before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def create_ledger(path: Path) -> None:
    """Create a new ledger atomically: built with its schema under a temporary name, then linked
    into place. So a file at the ledger's path always holds a schema, and an empty or schema-less
    file there can only be a damaged ledger (see check_file); a crash or a concurrent `capi`
    during creation can never leave a half-made ledger that would pass for a new, empty one."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    _create_private(temp)
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            # Rollback journal while building, so that everything is in the main file when linked.
            for number, script in enumerate(MIGRATIONS):
                conn.execute("BEGIN IMMEDIATE")
                for statement in split_sql(sqlite_sql(script)):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
        finally:
            conn.close()
        try:
            os.link(temp, path)  # unlike rename, never replaces a ledger another process just made
        except FileExistsError:
            pass
    except sqlite3.DatabaseError as exc:
        raise ledger_error(path, exc) from None
    finally:
        for leftover in (temp, Path(f"{temp}-journal")):
            leftover.unlink(missing_ok=True)


def ledger_error(path: Path, exc: sqlite3.DatabaseError) -> SetupError:
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or "full" in str(exc) or (name.startswith("SQLITE_IOERR") and _no_room(path)):
        return SetupError(
            f"ledger: cannot write {path}: the disk is full ({exc}); free some space and run again "
            "(a batch whose answer could not be recorded is held `uncertain`)"
        )
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(exc):
        return SetupError(
            f"ledger: {path} is damaged ({exc}); capi will not treat it as empty, which would send "
            "every event again. Restore it from a backup, or move it aside"
        )
    return SetupError(f"ledger: {path}: {exc}")


def _no_room(path: Path) -> bool:
    """A full disk can surface as an I/O error: the -shm file SQLite maps cannot grow (ENOSPC is then
    a SIGBUS-safe SQLITE_IOERR_SHMSIZE, not SQLITE_FULL). Less than 64 KiB free says which it was."""
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 64 * 1024


_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_file(path: Path) -> None:
    """Refuse a ledger file that is damaged in a way SQLite would not notice at once.

    SQLite takes an empty file for a new, empty database, and a truncated one may answer "not
    found" for rows that were cut off: either way capi would send again events Meta already
    counted. The header says how many pages the file had at its last checkpoint; with no WAL
    beside it, the file must hold them all."""
    damaged = (
        f"ledger: {path} is damaged ({{}}); capi will not treat it as empty, which would send every "
        "event again. Restore it from a backup, or move it aside to start a new ledger"
    )
    size = path.stat().st_size
    if size == 0:
        raise SetupError(damaged.format("the file is empty"))
    with path.open("rb") as fh:
        header = fh.read(100)
    if not header.startswith(_SQLITE_MAGIC):
        raise SetupError(f"ledger: {path} is not a capi ledger (not an SQLite database); move it aside")
    if len(header) < 100:
        raise SetupError(damaged.format("truncated in its header"))
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    pages_valid = header[24:28] == header[92:96]  # SQLite's rule for trusting the in-header size
    wal = Path(f"{path}-wal")
    wal_frames = wal.exists() and wal.stat().st_size > 32
    if pages_valid and not wal_frames and page_size and size < pages * page_size:
        raise SetupError(damaged.format(f"truncated: {size} of {pages * page_size} bytes"))
