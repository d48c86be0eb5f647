"""ducksafe_hook: call ducksafe's pre-run hook from a Python orchestrator (protocol v1).

Install: copy this one file into your package (or put hooks/ on sys.path); it needs only the
standard library (Python 3.8 or later). ducksafe must be on PATH, or named by $DUCKSAFE or
the ``binary`` argument.

    import ducksafe_hook

    pre = ducksafe_hook.pre_run(config="config.yaml", request_id="run-42")
    # raises DucksafeBusy (exit 75: retry later) or DucksafeError: do not start the run
    exit_code = run_the_simulation()
    post = ducksafe_hook.post_run(pre.backup_id, exit_code=exit_code,
                                  config="config.yaml", on_failure="restore")
    # post.decision: "kept" or "restored"; post.restore.quarantine holds the failed run's files

or, for work done in this process:

    with ducksafe_hook.protected_run(config="config.yaml", on_failure="restore") as run:
        run_the_simulation()          # an exception here restores the backup, then propagates

Each call sends one JSON request to ``ducksafe hook`` and parses its one JSON line into the
dataclasses below. Branch on ``decision``, ``codes`` and ``exit_code``, never on ``reason`` or
``message`` (prose for people). The contract is docs/protocol.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
import collections.abc
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple, Union

__all__ = [
    "PROTOCOL_VERSION",
    "EXIT_RETRYABLE",
    "EXIT_TIMEOUT",
    "BackupRef",
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

PROTOCOL_VERSION = 1
#: The exit code (and only one) whose errors are ``retryable``: the database or the backup
#: directory is busy.
EXIT_RETRYABLE = 75
#: The ``exit_code`` of HookTimeout: ducksafe did not answer within the caller's ``timeout`` and
#: was killed (124, as GNU timeout says).
EXIT_TIMEOUT = 124

#: A configuration file path, the configuration itself (``{"DB_PATH": ...}``), or None for
#: ducksafe's default lookup ($DUCKSAFE_CONFIG, else ./config.yaml).
ConfigArg = Union[str, "os.PathLike[str]", Mapping[str, Any], None]


# --- request -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """How the workload run ended (post_run)."""

    outcome: str  # "success" | "failure"
    exit_code: Optional[int] = None

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> RunInfo:
        code = v.get("exit_code")
        return cls(outcome=str(v["outcome"]), exit_code=None if code is None else int(code))

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"outcome": self.outcome}
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        return out


@dataclass(frozen=True)
class Request:
    """One hook request (the fields of docs/protocol.md, "Request")."""

    event: str  # "pre_run" | "post_run" | "validate"
    config: ConfigArg = None
    request_id: Optional[str] = None
    dry_run: bool = False
    backup_id: Optional[str] = None
    run: Optional[RunInfo] = None
    on_failure: Optional[str] = None  # "restore" | "keep"

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"protocol_version": PROTOCOL_VERSION, "event": self.event}
        if self.request_id is not None:
            out["request_id"] = self.request_id
        if self.config is not None:
            if isinstance(self.config, collections.abc.Mapping):
                out["config"] = {"inline": dict(self.config)}
            else:
                out["config"] = {"path": os.fspath(self.config)}
        if self.dry_run:
            out["dry_run"] = True
        if self.backup_id is not None:
            out["backup_id"] = self.backup_id
        if self.run is not None:
            out["run"] = self.run.to_json()
        if self.on_failure is not None:
            out["on_failure"] = self.on_failure
        return out


# --- response ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorEntry:
    code: str
    message: str
    retryable: bool
    path: Optional[str] = None
    hint: Optional[str] = None

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> ErrorEntry:
        return cls(
            code=str(v["code"]),
            message=str(v.get("message", "")),
            retryable=bool(v.get("retryable", False)),
            path=v.get("path"),
            hint=v.get("hint"),
        )


@dataclass(frozen=True)
class BackupRef:
    id: str
    path: str
    bytes: int
    sha256: str
    created_at: str
    verified: bool
    verification: Tuple[str, ...]

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> BackupRef:
        return cls(
            id=str(v["id"]),
            path=str(v["path"]),
            bytes=int(v["bytes"]),
            sha256=str(v["sha256"]),
            created_at=str(v["created_at"]),
            verified=bool(v["verified"]),
            verification=tuple(v.get("verification", ())),
        )


@dataclass(frozen=True)
class Rollback:
    strategy: str
    backup_id: str
    command: Tuple[str, ...]
    request: Dict[str, Any]
    manual: Tuple[str, ...]

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> Rollback:
        return cls(
            strategy=str(v["strategy"]),
            backup_id=str(v["backup_id"]),
            command=tuple(v["command"]),
            request=dict(v["request"]),
            manual=tuple(v["manual"]),
        )


@dataclass(frozen=True)
class Deleted:
    id: str
    bytes: int
    reason: str


@dataclass(frozen=True)
class RotationReport:
    kept: Tuple[str, ...]
    deleted: Tuple[Deleted, ...]

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> RotationReport:
        return cls(
            kept=tuple(v.get("kept", ())),
            deleted=tuple(
                Deleted(id=str(d["id"]), bytes=int(d["bytes"]), reason=str(d["reason"]))
                for d in v.get("deleted", ())
            ),
        )


@dataclass(frozen=True)
class SpaceReport:
    available_bytes: int
    required_bytes: int
    backups_bytes: int

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> SpaceReport:
        return cls(
            available_bytes=int(v["available_bytes"]),
            required_bytes=int(v["required_bytes"]),
            backups_bytes=int(v["backups_bytes"]),
        )


@dataclass(frozen=True)
class RestoreRef:
    backup_id: str
    database: str
    quarantine: str
    quarantined_files: Tuple[str, ...]
    undo: Tuple[str, ...]
    duration_ms: int

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> RestoreRef:
        return cls(
            backup_id=str(v["backup_id"]),
            database=str(v["database"]),
            quarantine=str(v["quarantine"]),
            quarantined_files=tuple(v["quarantined_files"]),
            undo=tuple(v["undo"]),
            duration_ms=int(v["duration_ms"]),
        )


def _opt(cls: Any, v: Any) -> Any:
    return None if v is None else cls.from_json(v)


@dataclass(frozen=True)
class Response:
    """One hook response. Fields unknown to this module are kept in ``raw``."""

    protocol_version: int
    request_id: str
    event: Optional[str]
    status: str  # "ok" | "error"
    decision: str  # proceed abort kept restored restore_failed skipped valid invalid
    reason: str
    exit_code: int
    duration_ms: int
    warnings: Tuple[str, ...] = ()
    errors: Tuple[ErrorEntry, ...] = ()
    backup: Optional[BackupRef] = None
    rollback: Optional[Rollback] = None
    rotation: Optional[RotationReport] = None
    space: Optional[SpaceReport] = None
    restore: Optional[RestoreRef] = None
    #: post_run: the run as the request reported it (``exit_code`` is the workload's own).
    run: Optional[RunInfo] = None
    paths: Dict[str, str] = field(default_factory=dict)
    supported_versions: Optional[Tuple[int, ...]] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> Response:
        sv = v.get("supported_versions")
        return cls(
            protocol_version=int(v["protocol_version"]),
            request_id=str(v["request_id"]),
            event=v.get("event"),
            status=str(v["status"]),
            decision=str(v["decision"]),
            reason=str(v.get("reason", "")),
            exit_code=int(v["exit_code"]),
            duration_ms=int(v.get("duration_ms", 0)),
            warnings=tuple(v.get("warnings", ())),
            errors=tuple(ErrorEntry.from_json(e) for e in v.get("errors", ())),
            backup=_opt(BackupRef, v.get("backup")),
            rollback=_opt(Rollback, v.get("rollback")),
            rotation=_opt(RotationReport, v.get("rotation")),
            space=_opt(SpaceReport, v.get("space")),
            restore=_opt(RestoreRef, v.get("restore")),
            run=_opt(RunInfo, v.get("run")),
            paths=dict(v.get("paths", {})),
            supported_versions=None if sv is None else tuple(int(x) for x in sv),
            raw=dict(v),
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def codes(self) -> Tuple[str, ...]:
        """The stable error codes, in order (empty on success)."""
        return tuple(e.code for e in self.errors)

    @property
    def retryable(self) -> bool:
        return self.exit_code == EXIT_RETRYABLE

    @property
    def backup_id(self) -> str:
        """The backup a pre_run created; raises ValueError when there is none (dry run)."""
        if self.backup is None:
            raise ValueError(f"response `{self.request_id}` names no backup ({self.decision})")
        return self.backup.id


# --- errors --------------------------------------------------------------------------------


class DucksafeError(Exception):
    """ducksafe did not answer what the caller needs (pre_run not `proceed`, post_run not ok).

    ``codes`` are the stable error codes, ``exit_code`` the hook's exit code, ``response`` the
    whole parsed answer (None when there was no answer at all).
    """

    def __init__(self, message: str, exit_code: int, response: Optional[Response] = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.response = response

    @property
    def codes(self) -> Tuple[str, ...]:
        return () if self.response is None else self.response.codes

    @property
    def retryable(self) -> bool:
        return self.exit_code == EXIT_RETRYABLE

    @property
    def decision(self) -> Optional[str]:
        return None if self.response is None else self.response.decision


class DucksafeBusy(DucksafeError):
    """Exit 75 (`database_locked`, `lock_busy`): nothing was done; retry later unchanged."""


class HookUnavailable(DucksafeError):
    """ducksafe could not be run, or did not answer one JSON line (``response`` is None)."""


class HookTimeout(DucksafeError):
    """ducksafe did not answer within ``timeout`` seconds and was killed (``exit_code`` 124,
    ``response`` None). Unlike HookUnavailable, ducksafe ran and was doing something: a killed
    pre_run leaves no backup (its temporary file is removed by the next one), but a killed
    post_run may have been restoring. Check the database before the next run: the next
    ``ducksafe restore`` or backup completes a restore whose journal was written (docs/runbook.md,
    "An interrupted restore"). Do not give post_run a timeout you are not ready to see hit."""


def _raise_for(response: Response, what: str) -> None:
    codes = ", ".join(response.codes) or "no error code"
    message = (
        f"ducksafe {what} answered `{response.decision}` (exit {response.exit_code}: "
        f"{codes}): {response.reason}"
    )
    kind = DucksafeBusy if response.retryable else DucksafeError
    own = f"(PID {os.getpid()})"
    if response.retryable and own in message:
        # The holder is this process (a connection the block left open, or one a traceback
        # keeps alive): retrying unchanged can never succeed, so this is no DucksafeBusy.
        message += (
            f"; the database is open in this very process {own}: close every DuckDB connection"
            " before the protected block ends (`with duckdb.connect(...) as con:`), then restore"
            " with the rollback command of the pre_run answer"
        )
        kind = DucksafeError
    raise kind(message, response.exit_code, response)


# --- calls ---------------------------------------------------------------------------------


def _binary(binary: Optional[str]) -> str:
    return binary or os.environ.get("DUCKSAFE") or "ducksafe"


def call(
    request: Request,
    *,
    binary: Optional[str] = None,
    cwd: Union[str, "os.PathLike[str]", None] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
) -> Response:
    """Sends one request and returns the parsed response, whatever it says.

    Raises HookUnavailable when ducksafe cannot be run or its stdout is not one JSON line, and
    HookTimeout when it did not answer within ``timeout`` seconds (it is then killed).
    ducksafe's log (stderr) is passed through to this process's stderr.
    """
    argv = [_binary(binary), "hook"]
    try:
        p = subprocess.run(
            argv,
            input=json.dumps(request.to_json()),
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            cwd=cwd,
            env=None if env is None else dict(env),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise HookTimeout(
            f"`{argv[0]} hook` did not answer `{request.event}` within {timeout} s and was "
            "killed; if it was restoring, see docs/runbook.md, \"An interrupted restore\"",
            EXIT_TIMEOUT,
        ) from e
    except OSError as e:
        raise HookUnavailable(f"cannot run `{argv[0]} hook`: {e}", 127) from e
    lines = p.stdout.splitlines()
    try:
        if len(lines) != 1:
            raise ValueError(f"expected one line on stdout, got {len(lines)}")
        response = Response.from_json(json.loads(lines[0]))
    except (ValueError, KeyError, TypeError) as e:
        code = p.returncode if p.returncode else 70
        raise HookUnavailable(
            f"`{argv[0]} hook` gave no valid answer (exit {p.returncode}): {e}", code
        ) from e
    return response


def pre_run(
    config: ConfigArg = None,
    *,
    request_id: Optional[str] = None,
    dry_run: bool = False,
    binary: Optional[str] = None,
    cwd: Union[str, "os.PathLike[str]", None] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
) -> Response:
    """Backs up and verifies the database. Returns the `proceed` response (``.backup_id`` is
    what post_run needs); raises DucksafeBusy or DucksafeError otherwise: do not start the run."""
    r = call(
        Request("pre_run", config=config, request_id=request_id, dry_run=dry_run),
        binary=binary,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    if r.decision != "proceed" or r.exit_code != 0:
        _raise_for(r, "pre_run")
    return r


def post_run(
    backup_id: Optional[str],
    *,
    exit_code: Optional[int] = None,
    outcome: Optional[str] = None,
    on_failure: Optional[str] = None,
    config: ConfigArg = None,
    request_id: Optional[str] = None,
    dry_run: bool = False,
    binary: Optional[str] = None,
    cwd: Union[str, "os.PathLike[str]", None] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
) -> Response:
    """Reports how the run ended. ``outcome`` defaults to success exactly when ``exit_code`` is 0.
    On failure the backup is restored when ``on_failure="restore"`` (or RESTORE_ON_FAILURE).
    Returns the response (`kept`, `restored`, `skipped`); raises DucksafeError when ducksafe
    answered an error (`restore_failed`: see docs/runbook.md)."""
    if outcome is None:
        if exit_code is None:
            raise ValueError("post_run needs `exit_code` or `outcome`")
        outcome = "success" if exit_code == 0 else "failure"
    r = call(
        Request(
            "post_run",
            config=config,
            request_id=request_id,
            dry_run=dry_run,
            backup_id=backup_id,
            run=RunInfo(outcome, exit_code),
            on_failure=on_failure,
        ),
        binary=binary,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    if not r.ok:
        _raise_for(r, "post_run")
    return r


def validate(
    config: ConfigArg = None,
    *,
    request_id: Optional[str] = None,
    binary: Optional[str] = None,
    cwd: Union[str, "os.PathLike[str]", None] = None,
    env: Optional[Mapping[str, str]] = None,
) -> Response:
    """Checks the configuration and the database. Returns the `valid` response; raises
    DucksafeError (``codes`` lists every violation, e.g. `config_invalid`) otherwise."""
    r = call(
        Request("validate", config=config, request_id=request_id), binary=binary, cwd=cwd, env=env
    )
    if not r.ok:
        _raise_for(r, "validate")
    return r


@dataclass
class ProtectedRun:
    """What :func:`protected_run` yields: the pre_run answer, then the post_run answer."""

    pre: Response
    post: Optional[Response] = None

    @property
    def backup_id(self) -> str:
        return self.pre.backup_id


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived during a protected block (a `timeout`, a closed terminal, a
    scheduler stopping the job): the block ends here, the run counts as failed with 128 + N,
    post_run runs (restoring when asked), and then the process ends by that signal, as it would
    have without the block."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def _exit_code(e: BaseException) -> int:
    """The exit code Python itself would end with for this exception."""
    if isinstance(e, SystemExit):
        if e.code is None:
            return 0
        # bool is an int too: sys.exit(True) exits 1. The status is the low 8 bits, as the
        # process's own exit status would be: sys.exit(256) succeeds, sys.exit(-1) is 255.
        return int(e.code) % 256 if isinstance(e.code, int) else 1
    if isinstance(e, KeyboardInterrupt):
        return 130  # 128 + SIGINT, as a shell reports a Ctrl-C
    if isinstance(e, Terminated):
        return 128 + e.signum
    return 1


_STOPS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals(handler: Any) -> Iterator[None]:
    """SIGTERM and SIGHUP handled by `handler` for the block (main thread only: Python takes
    signals there alone), the previous handlers back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in _STOPS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _terminate(signum: int, _frame: Any) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def protected_run(
    config: ConfigArg = None,
    *,
    on_failure: Optional[str] = None,
    request_id: Optional[str] = None,
    binary: Optional[str] = None,
    cwd: Union[str, "os.PathLike[str]", None] = None,
    env: Optional[Mapping[str, str]] = None,
) -> Iterator[ProtectedRun]:
    """pre_run on entry (raises when the run must not start), post_run on exit, then any exception
    propagates. The block's outcome follows Python's own exit rules: it succeeds when it returns
    or raises ``SystemExit`` with code None or 0 (``sys.exit()``); it fails with exit code N for
    ``SystemExit(N)``, 130 for KeyboardInterrupt (Ctrl-C), 1 for ``SystemExit`` with any other
    code (a message) and for every other exception. Close every DuckDB connection to the
    database inside the block: a restore needs the database to itself."""
    pre = pre_run(config, request_id=request_id, binary=binary, cwd=cwd, env=env)
    run = ProtectedRun(pre)
    kw: Dict[str, Any] = dict(
        config=config, request_id=pre.request_id, binary=binary, cwd=cwd, env=env
    )
    try:
        with _signals(_terminate):
            yield run
    except BaseException as e:
        code = _exit_code(e)
        # Nothing may cut the restore short: a second SIGTERM or SIGHUP is ignored meanwhile,
        # and ducksafe inherits that.
        with _signals(signal.SIG_IGN):
            if code == 0:
                run.post = post_run(pre.backup_id, exit_code=0, **kw)
            else:
                run.post = post_run(pre.backup_id, exit_code=code, on_failure=on_failure, **kw)
        if isinstance(e, Terminated):
            # End as the signal would have ended the process: the caller (a shell, `timeout`)
            # sees 128 + N.
            signal.signal(e.signum, signal.SIG_DFL)
            os.kill(os.getpid(), e.signum)
        raise
    run.post = post_run(pre.backup_id, exit_code=0, **kw)
