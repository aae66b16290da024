"""One exception family for every error a user can cause, each carrying its exit code.

The CLI translates a CapiError into one line on stderr and its exit code; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of SPEC §1. When several apply: SETUP > INCOMPLETE > DATA."""

    OK = 0
    DATA = 1  # some input rows invalid, events rejected by Meta, or webhook input unreadable
    USAGE = 2  # bad option or value
    SETUP = 3  # config missing/invalid, token refused, permission, dataset not found
    INCOMPLETE = 4  # batches failed after retries or uncertain; a later run picks them up
    LOCKED = 5  # another `capi send` holds the ledger lock
    INTERRUPTED = 130  # Ctrl-C / SIGTERM; the ledger stays consistent


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "everything done",
    ExitCode.DATA: "data problem: invalid input rows, events rejected by Meta, or unreadable webhook input",
    ExitCode.USAGE: "usage error (bad option, bad value)",
    ExitCode.SETUP: "setup problem: config, token refused, permission, dataset not found",
    ExitCode.INCOMPLETE: "delivery incomplete: failed or uncertain batches; a later run picks them up",
    ExitCode.LOCKED: "another `capi send` holds the ledger lock",
    ExitCode.INTERRUPTED: "interrupted; the ledger stays consistent",
}

# Precedence when several outcomes apply to one run (SPEC §1).
_SEVERITY = {
    ExitCode.OK: 0,
    ExitCode.DATA: 1,
    ExitCode.INCOMPLETE: 2,
    ExitCode.SETUP: 3,
    ExitCode.USAGE: 4,
    ExitCode.LOCKED: 5,
    ExitCode.INTERRUPTED: 6,
}


def worst(*codes: ExitCode) -> ExitCode:
    """The exit code that wins when several apply (3 over 4 over 1)."""
    return max(codes, key=lambda c: _SEVERITY[c], default=ExitCode.OK)


class CapiError(Exception):
    """An error the user can fix; its message is one line that says what and where."""

    exit_code: ExitCode = ExitCode.DATA

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class DataError(CapiError):
    exit_code = ExitCode.DATA


class UsageError(CapiError):
    exit_code = ExitCode.USAGE


class SetupError(CapiError):
    exit_code = ExitCode.SETUP


class ConfigError(SetupError):
    """A config file or setting is missing or invalid."""


class LedgerLocked(CapiError):
    exit_code = ExitCode.LOCKED
