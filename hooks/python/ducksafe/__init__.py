"""ducksafe: verified, atomic backups of a DuckDB database before every run that writes it.

The wheel built from a checkout (``maturin build --locked --release --out dist``, then
``pip install dist/ducksafe-*.whl``; it is not on PyPI) installs the ``ducksafe`` binary (on the
environment's PATH) and this package, which speaks its hook protocol v1 (docs/protocol.md) and
its operator commands::

    import ducksafe

    with ducksafe.guarded_run(config="config.yaml") as run:   # a verified backup first
        run.exit_code = run_the_simulation()                  # or raise: the same
    print(run.post.decision)                                  # "kept" or "restored"

or step by step::

    pre = ducksafe.pre_run(config="config.yaml", request_id="run-42")   # raises: do not run
    exit_code = run_the_simulation()
    post = ducksafe.post_run(pre.backup_id, exit_code=exit_code, config="config.yaml",
                             on_failure="restore")

    ducksafe.validate(config="config.yaml")          # the configuration and the database
    ducksafe.list_backups(config="config.yaml")      # BackupList: .backups newest first
    ducksafe.restore("latest", config="config.yaml")  # the restored backup and the quarantine

Every call runs the binary once and returns frozen dataclasses (:class:`Response`,
:class:`BackupList`…); a failure raises a :class:`DucksafeError` subclass carrying ``code``,
``codes``, ``exit_code``, ``retryable`` and the parsed ``response``. Branch on them, never on
the messages. The binary is the one installed with this package, else ``$DUCKSAFE_BIN``, else
``ducksafe`` on PATH (:func:`find_binary`), unless a call names one with ``binary=``.
"""

from __future__ import annotations

from ._binary import find_binary, installed_binary
from ._client import call, list_backups, post_run, pre_run, restore, validate
from ._errors import (
    BackupFailed,
    BinaryNotFound,
    ConfigError,
    DucksafeBusy,
    DucksafeError,
    HookTimeout,
    HookUnavailable,
    IntegrityError,
    InternalError,
    NotFound,
    RestoreFailed,
    UsageError,
)
from ._guard import (
    AbandonedRun,
    GuardedRun,
    ProtectedRun,
    Terminated,
    exit_code_of,
    guarded_run,
    protected_run,
)
from ._types import (
    EXIT_NOT_FOUND,
    EXIT_RETRYABLE,
    EXIT_TIMEOUT,
    PROTOCOL_VERSION,
    BackupInfo,
    BackupList,
    BackupRef,
    ConfigArg,
    Deleted,
    ErrorEntry,
    PendingRestore,
    Request,
    Response,
    RestoreRef,
    Rollback,
    RotationReport,
    RunInfo,
    SpaceReport,
)


def _version() -> str:
    try:
        from importlib import metadata

        return metadata.version("ducksafe")
    except Exception:  # noqa: BLE001 - running from a checkout: no installed metadata
        return "0+unknown"


#: The installed distribution's version (the crate's, Cargo.toml), "0+unknown" from a checkout.
__version__ = _version()

__all__ = [
    "AbandonedRun",
    "EXIT_NOT_FOUND",
    "EXIT_RETRYABLE",
    "EXIT_TIMEOUT",
    "PROTOCOL_VERSION",
    "BackupFailed",
    "BackupInfo",
    "BackupList",
    "BackupRef",
    "BinaryNotFound",
    "ConfigArg",
    "ConfigError",
    "Deleted",
    "DucksafeBusy",
    "DucksafeError",
    "ErrorEntry",
    "GuardedRun",
    "HookTimeout",
    "HookUnavailable",
    "IntegrityError",
    "InternalError",
    "NotFound",
    "PendingRestore",
    "ProtectedRun",
    "Request",
    "Response",
    "RestoreFailed",
    "RestoreRef",
    "Rollback",
    "RotationReport",
    "RunInfo",
    "SpaceReport",
    "Terminated",
    "UsageError",
    "__version__",
    "call",
    "exit_code_of",
    "find_binary",
    "guarded_run",
    "installed_binary",
    "list_backups",
    "post_run",
    "pre_run",
    "protected_run",
    "restore",
    "validate",
]
