"""Typed exceptions: one class per kind of failure, each carrying ducksafe's error codes, its
exit code, ``retryable`` and the parsed answer (docs/protocol.md, "Error codes and exit codes").

    DucksafeError                  any failure; ``except DucksafeError`` catches them all
    ├── DucksafeBusy        75     database_locked, lock_busy: retry later, unchanged
    ├── UsageError          64 65 76  usage, invalid_request, unsupported_event,
    │                              unsupported_protocol_version: the call itself is wrong
    ├── NotFound            66     database_not_found, config_not_found, backup_not_found
    ├── InternalError       70     internal: a bug in ducksafe
    ├── BackupFailed        73     insufficient_space, backup_dir_unsafe, backup_failed
    ├── IntegrityError      74     verification_failed, io_error, database_invalid,
    │   │                          database_damaged
    │   └── RestoreFailed   74     restore_failed: needs an operator (docs/runbook.md)
    ├── ConfigError         78     config_invalid (every violation in ``errors``)
    ├── HookUnavailable     127 or ducksafe's own: no valid answer at all (``response`` None)
    │   └── BinaryNotFound  127    no ducksafe binary could be found or started
    └── HookTimeout         124    no answer within ``timeout``; ducksafe was killed
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple, Type

from ._types import EXIT_RETRYABLE, ErrorEntry, Response


class DucksafeError(Exception):
    """ducksafe did not answer what the caller needs (pre_run not ``proceed``, another call not
    ok), or could not answer at all.

    ``exit_code`` is ducksafe's exit code (or 124 / 127, see the subclasses), ``response`` the
    whole parsed answer (None when there was none), ``errors`` its entries, ``codes`` their
    stable codes, ``code`` the first of them, ``retryable`` True when the same call may succeed
    later unchanged (exit 75).
    """

    def __init__(
        self,
        message: str,
        exit_code: int,
        response: Optional[Response] = None,
        *,
        retryable: Optional[bool] = None,
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.response = response
        if retryable is None:
            # Busy is what an answer says (exit 75 with its errors), never a bare exit status.
            retryable = response is not None and response.exit_code == EXIT_RETRYABLE
        self.retryable = retryable

    @property
    def errors(self) -> Tuple[ErrorEntry, ...]:
        return () if self.response is None else self.response.errors

    @property
    def codes(self) -> Tuple[str, ...]:
        return () if self.response is None else self.response.codes

    @property
    def code(self) -> Optional[str]:
        """The first error code (None when there is no answer, or it lists none)."""
        codes = self.codes
        return codes[0] if codes else None

    @property
    def decision(self) -> Optional[str]:
        return None if self.response is None else self.response.decision


class DucksafeBusy(DucksafeError):
    """Exit 75 (``database_locked``, ``lock_busy``): nothing was done; retry later unchanged."""


class UsageError(DucksafeError):
    """Exit 64, 65 or 76: the call itself is wrong (bad arguments, a request ducksafe refuses,
    a protocol version it does not speak). Fix the caller."""


class NotFound(DucksafeError):
    """Exit 66: the database, the configuration file or the backup does not exist."""


class InternalError(DucksafeError):
    """Exit 70: a bug in ducksafe; nothing unverified was published."""


class BackupFailed(DucksafeError):
    """Exit 73: the backup cannot be created (space, an unsafe backup directory, a failed
    write)."""


class IntegrityError(DucksafeError):
    """Exit 74: an I/O or verification failure, or a damaged database."""


class RestoreFailed(IntegrityError):
    """``restore_failed``: the restore could not complete; an operator is needed
    (docs/runbook.md, "Restore failed")."""


class ConfigError(DucksafeError):
    """Exit 78 (``config_invalid``): every violation is an entry of ``errors``, with its JSON
    Pointer in ``path``."""


class HookUnavailable(DucksafeError):
    """ducksafe could not be run, or did not answer exactly one JSON line of protocol v1
    (``response`` is None; ``exit_code`` is ducksafe's own, 128 + N when signal N killed it,
    127 when it could not be started)."""


class BinaryNotFound(HookUnavailable):
    """No ducksafe binary: not installed with this package, not $DUCKSAFE_BIN, not on PATH."""


class HookTimeout(DucksafeError):
    """ducksafe did not answer within ``timeout`` seconds and was killed (``exit_code`` 124,
    ``response`` None). Unlike HookUnavailable, ducksafe ran and was doing something: a killed
    pre_run leaves at most a backup (an unfinished one is removed by the next backup), and
    ``pre_run()`` ends the run it may have recorded before raising (its message says whether it
    could); a killed post_run or restore may have been restoring. Check the database before the next run: the
    next ``ducksafe restore`` or backup completes a restore whose journal was written
    (docs/runbook.md, "An interrupted restore"). Do not give a restoring call a timeout you are
    not ready to see hit."""


_BY_EXIT: Dict[int, Type[DucksafeError]] = {
    64: UsageError,
    65: UsageError,
    66: NotFound,
    70: InternalError,
    73: BackupFailed,
    74: IntegrityError,
    75: DucksafeBusy,
    76: UsageError,
    78: ConfigError,
}


def error_for(response: Response, what: str) -> DucksafeError:
    """The exception for an answer that is not what ``what`` needed."""
    codes = ", ".join(response.codes) or "no error code"
    message = (
        f"ducksafe {what} answered `{response.decision}` (exit {response.exit_code}: "
        f"{codes}): {response.reason}"
    )
    details = [e.message for e in response.errors if e.message and e.message not in message]
    if details:
        # The problems themselves, not only their count: what an operator reads first.
        message += "; " + "; ".join(details)
    kind = _BY_EXIT.get(response.exit_code, DucksafeError)
    retryable = response.retryable
    own = f"(PID {os.getpid()})"
    if retryable and own in message:
        # The holder is this process (a connection the block left open, or one a traceback
        # keeps alive): retrying unchanged can never succeed, so this is no DucksafeBusy.
        message += (
            f"; the database is open in this very process {own}: close every DuckDB connection"
            " (`with duckdb.connect(...) as con:`)"
        )
        if what == "post_run":
            message += ", then restore with the rollback command of the pre_run answer"
        kind = DucksafeError
        retryable = False
    restore_failed = "restore_failed" in response.codes or response.decision == "restore_failed"
    if restore_failed and what == "post_run":
        # Whatever the exit code (75 when a process held the database, 66 for a backup not
        # found): the failed run's database is still in place, and retrying the run would back
        # that up. An operator acts first (docs/runbook.md, "Restore failed").
        kind = RestoreFailed
        retryable = False
    elif restore_failed:
        kind = RestoreFailed if kind in (IntegrityError, DucksafeError) else kind
    return kind(message, response.exit_code, response, retryable=retryable)
