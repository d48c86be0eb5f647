"""ducksafe_hook: the single-file Python client of ducksafe's hook, now the `ducksafe` package.

The client grew into a package, ``ducksafe`` (the wheel built from a checkout,
``pip install dist/ducksafe-*.whl``, installs it with the binary: README.md, Install; the source
is ``hooks/python/ducksafe/``). This file stays so that code written
against it keeps working unchanged: ``import ducksafe_hook`` gives the same names as before
(``pre_run``, ``post_run``, ``validate``, ``protected_run``, ``call``, ``Request``,
``Response``, ``DucksafeError``, ``DucksafeBusy``, ``HookUnavailable``, ``HookTimeout``…),
each now the package's own, with the same behaviour. New code imports ``ducksafe``: it adds
``guarded_run``, ``restore``, ``list_backups`` and an exception class per kind of failure.

It finds the package in ``python/`` beside this file (a checkout of ducksafe, where the dbt
wrapper ``hooks/ducksafe-dbt`` imports it), else installed (the wheel). A copy of
an earlier version of this file, standard library only, keeps working as it is: the protocol is
the same v1.
"""

from __future__ import annotations

import os
import sys

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python")
if os.path.isfile(os.path.join(_SOURCE, "ducksafe", "__init__.py")) and _SOURCE not in sys.path:
    # A checkout: its own package, never an older one installed elsewhere.
    sys.path.insert(0, _SOURCE)

try:
    from ducksafe import (
        EXIT_RETRYABLE,
        EXIT_TIMEOUT,
        PROTOCOL_VERSION,
        BackupRef,
        ConfigArg,
        Deleted,
        DucksafeBusy,
        DucksafeError,
        ErrorEntry,
        HookTimeout,
        HookUnavailable,
        ProtectedRun,
        Request,
        Response,
        RestoreRef,
        Rollback,
        RotationReport,
        RunInfo,
        SpaceReport,
        Terminated,
        call,
        post_run,
        pre_run,
        protected_run,
        validate,
    )
except ImportError as e:  # pragma: no cover - said to the person who copied this file alone
    raise ImportError(
        "ducksafe_hook is now a thin layer over the `ducksafe` package: install the wheel built"
        " from the checkout (`pip install dist/ducksafe-*.whl`, see README.md, Install), or keep"
        " hooks/python/ beside this file"
    ) from e

__all__ = [
    "PROTOCOL_VERSION",
    "EXIT_RETRYABLE",
    "EXIT_TIMEOUT",
    "BackupRef",
    "ConfigArg",
    "Deleted",
    "DucksafeBusy",
    "DucksafeError",
    "ErrorEntry",
    "HookTimeout",
    "HookUnavailable",
    "ProtectedRun",
    "Request",
    "Response",
    "RestoreRef",
    "Rollback",
    "RotationReport",
    "Terminated",
    "RunInfo",
    "SpaceReport",
    "call",
    "post_run",
    "pre_run",
    "protected_run",
    "validate",
]
