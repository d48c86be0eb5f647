"""The protocol's requests and answers as frozen dataclasses (docs/protocol.md).

Every ``from_json`` raises KeyError, TypeError or ValueError on an answer that lacks a field the
protocol says is always there; the client turns that into :class:`ducksafe.HookUnavailable`.
Fields this version does not know are kept in ``Response.raw``.
"""

from __future__ import annotations

import collections.abc
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar, Union

#: The only protocol version this package speaks.
PROTOCOL_VERSION = 1
#: The exit code (and the only one) whose errors are ``retryable``: the database or the backup
#: directory is busy; retry later, unchanged.
EXIT_RETRYABLE = 75
#: The ``exit_code`` of :class:`ducksafe.HookTimeout`: ducksafe did not answer within the
#: caller's ``timeout`` and was killed (124, as GNU timeout says).
EXIT_TIMEOUT = 124
#: The ``exit_code`` of :class:`ducksafe.HookUnavailable` when ducksafe could not be started.
EXIT_NOT_FOUND = 127

#: A configuration file path, the configuration itself (``{"DB_PATH": ...}``, sent inline), or
#: None for ducksafe's default lookup ($DUCKSAFE_CONFIG, else ./config.yaml).
ConfigArg = Union[str, "os.PathLike[str]", Mapping[str, Any], None]

_T = TypeVar("_T")


def _obj(v: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(v, collections.abc.Mapping):
        raise TypeError(f"{what}: expected a JSON object, got {type(v).__name__}")
    return v


def _strs(v: Any) -> Tuple[str, ...]:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a JSON array, got {type(v).__name__}")
    return tuple(str(x) for x in v)


def _int(v: Any) -> int:
    # bool is an int to Python, never to the protocol.
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {v!r}")
    return v


def _opt_str(v: Any) -> Optional[str]:
    return None if v is None else str(v)


@dataclass(frozen=True)
class RunInfo:
    """How the workload run ended (post_run's ``run``)."""

    outcome: str  # "success" | "failure"
    exit_code: Optional[int] = None

    @classmethod
    def from_json(cls, v: Any) -> RunInfo:
        v = _obj(v, "run")
        code = v.get("exit_code")
        return cls(outcome=str(v["outcome"]), exit_code=None if code is None else _int(code))

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"outcome": self.outcome}
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        return out


@dataclass(frozen=True)
class Request:
    """One hook request (docs/protocol.md, "Request")."""

    event: str  # "pre_run" | "post_run" | "validate"
    config: ConfigArg = None
    request_id: Optional[str] = None
    dry_run: bool = False
    backup_id: Optional[str] = None
    run: Optional[RunInfo] = None
    on_failure: Optional[str] = None  # "restore" | "keep"
    #: The backup's SHA-256 from the pre_run answer: a post_run restores nothing else.
    backup_sha256: Optional[str] = None

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
        if self.backup_sha256 is not None:
            out["backup_sha256"] = self.backup_sha256
        if self.run is not None:
            out["run"] = self.run.to_json()
        if self.on_failure is not None:
            out["on_failure"] = self.on_failure
        return out


@dataclass(frozen=True)
class ErrorEntry:
    """One problem: ``code`` is stable (branch on it), ``message`` and ``hint`` are for people,
    ``path`` a JSON Pointer into the configuration when the problem is there."""

    code: str
    message: str
    retryable: bool
    path: Optional[str] = None
    hint: Optional[str] = None

    @classmethod
    def from_json(cls, v: Any) -> ErrorEntry:
        v = _obj(v, "error")
        return cls(
            code=str(v["code"]),
            message=str(v.get("message", "")),
            retryable=bool(v.get("retryable", False)),
            path=_opt_str(v.get("path")),
            hint=_opt_str(v.get("hint")),
        )


@dataclass(frozen=True)
class BackupRef:
    """A backup that was created (pre_run) or restored (post_run, restore)."""

    id: str
    path: str
    bytes: int
    sha256: str
    created_at: str
    verified: bool
    #: The checks that passed, in order: size, sha256, block_checksums, open, row_counts,
    #: fingerprints (fewer at a lower VERIFY_LEVEL).
    verification: Tuple[str, ...]

    @classmethod
    def from_json(cls, v: Any) -> BackupRef:
        v = _obj(v, "backup")
        return cls(
            id=str(v["id"]),
            path=str(v["path"]),
            bytes=_int(v["bytes"]),
            sha256=str(v["sha256"]),
            created_at=str(v["created_at"]),
            verified=bool(v["verified"]),
            verification=_strs(v.get("verification", ())),
        )


@dataclass(frozen=True)
class Rollback:
    """How to undo the run that follows a pre_run: ``command`` (argv), ``request`` (a ready
    post_run request), ``manual`` (shell lines, no ducksafe needed)."""

    strategy: str
    backup_id: str
    command: Tuple[str, ...]
    request: Dict[str, Any]
    manual: Tuple[str, ...]

    @classmethod
    def from_json(cls, v: Any) -> Rollback:
        v = _obj(v, "rollback")
        return cls(
            strategy=str(v["strategy"]),
            backup_id=str(v["backup_id"]),
            command=_strs(v["command"]),
            request=dict(_obj(v["request"], "rollback.request")),
            manual=_strs(v["manual"]),
        )


@dataclass(frozen=True)
class Deleted:
    """A backup that rotation deleted, and why."""

    id: str
    bytes: int
    reason: str


@dataclass(frozen=True)
class RotationReport:
    """What rotation kept and deleted (pre_run)."""

    kept: Tuple[str, ...]
    deleted: Tuple[Deleted, ...]

    @classmethod
    def from_json(cls, v: Any) -> RotationReport:
        v = _obj(v, "rotation")
        return cls(
            kept=_strs(v.get("kept", ())),
            deleted=tuple(
                Deleted(id=str(d["id"]), bytes=_int(d["bytes"]), reason=str(d["reason"]))
                for d in (_obj(x, "rotation.deleted") for x in v.get("deleted", ()))
            ),
        )


@dataclass(frozen=True)
class SpaceReport:
    """Space on the backup filesystem (pre_run)."""

    available_bytes: int
    required_bytes: int
    backups_bytes: int

    @classmethod
    def from_json(cls, v: Any) -> SpaceReport:
        v = _obj(v, "space")
        return cls(
            available_bytes=_int(v["available_bytes"]),
            required_bytes=_int(v["required_bytes"]),
            backups_bytes=_int(v["backups_bytes"]),
        )


@dataclass(frozen=True)
class RestoreRef:
    """What a restore moved (post_run ``restored``, ``restore``): the replaced files are in
    ``quarantine``; ``undo`` puts them back."""

    backup_id: str
    database: str
    quarantine: str
    quarantined_files: Tuple[str, ...]
    undo: Tuple[str, ...]
    duration_ms: int
    #: The database already was the backup byte for byte: nothing was moved.
    unchanged: bool = False

    @classmethod
    def from_json(cls, v: Any) -> RestoreRef:
        v = _obj(v, "restore")
        return cls(
            backup_id=str(v["backup_id"]),
            database=str(v["database"]),
            quarantine=str(v["quarantine"]),
            quarantined_files=_strs(v["quarantined_files"]),
            undo=_strs(v["undo"]),
            duration_ms=_int(v["duration_ms"]),
            unchanged=bool(v.get("unchanged", False)),
        )


def _opt(cls: Type[Any], v: Any) -> Any:
    return None if v is None else cls.from_json(v)


@dataclass(frozen=True)
class Response:
    """One answer of ducksafe (a hook response, or the report of ``ducksafe restore --json``).

    Branch on ``decision``, ``codes`` and ``exit_code``, never on ``reason`` (prose)."""

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
    #: The whole answer as ducksafe sent it, fields unknown to this version included.
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, v: Any) -> Response:
        v = _obj(v, "response")
        sv = v.get("supported_versions")
        event = v.get("event")
        return cls(
            protocol_version=_int(v["protocol_version"]),
            request_id=str(v["request_id"]),
            event=None if event is None else str(event),
            status=str(v["status"]),
            decision=str(v["decision"]),
            reason=str(v.get("reason", "")),
            exit_code=_int(v["exit_code"]),
            duration_ms=_int(v.get("duration_ms", 0)),
            warnings=_strs(v.get("warnings", ())),
            errors=tuple(ErrorEntry.from_json(e) for e in v.get("errors", ())),
            backup=_opt(BackupRef, v.get("backup")),
            rollback=_opt(Rollback, v.get("rollback")),
            rotation=_opt(RotationReport, v.get("rotation")),
            space=_opt(SpaceReport, v.get("space")),
            restore=_opt(RestoreRef, v.get("restore")),
            run=_opt(RunInfo, v.get("run")),
            paths={str(k): str(p) for k, p in _obj(v.get("paths", {}), "paths").items()},
            supported_versions=None if sv is None else tuple(_int(x) for x in sv),
            raw=dict(v),
        )

    @property
    def ok(self) -> bool:
        """True exactly when ``exit_code`` is 0."""
        return self.status == "ok"

    @property
    def codes(self) -> Tuple[str, ...]:
        """The stable error codes, in order (empty on success)."""
        return tuple(e.code for e in self.errors)

    @property
    def retryable(self) -> bool:
        """Busy (exit 75): nothing was done; the same request may succeed later."""
        return self.exit_code == EXIT_RETRYABLE

    @property
    def backup_id(self) -> str:
        """The backup a pre_run created; raises ValueError when there is none (dry run)."""
        if self.backup is None:
            raise ValueError(f"response `{self.request_id}` names no backup ({self.decision})")
        return self.backup.id


@dataclass(frozen=True)
class PendingRestore:
    """A restore that was interrupted after its journal was written (``ducksafe list``)."""

    backup_id: str
    journal: str
    quarantine: str
    started_at: str
    state: str
    #: The one command that finishes it.
    finish: str
    #: Shell commands that undo it instead.
    undo: Tuple[str, ...]

    @classmethod
    def from_json(cls, v: Any) -> PendingRestore:
        v = _obj(v, "unfinished restore")
        return cls(
            backup_id=str(v["backup_id"]),
            journal=str(v["journal"]),
            quarantine=str(v["quarantine"]),
            started_at=str(v["started_at"]),
            state=str(v["state"]),
            finish=str(v["finish"]),
            undo=_strs(v.get("undo", ())),
        )


@dataclass(frozen=True)
class BackupInfo:
    """One stored backup, as ``ducksafe list`` shows it (newest first)."""

    id: str
    created_at: str
    age_seconds: int
    bytes: int
    tables: int
    #: None when the manifest does not say (an older backup).
    rows: Optional[int]
    verified: bool
    verification_level: str
    pinned: bool
    #: Named by ``latest`` (what ``ducksafe restore`` restores by default).
    latest: bool
    #: The newest backup verified by a full scan of every table: rotation never deletes it.
    newest_fully_verified: bool
    wal_folded: bool
    #: "plain" (its own .duckdb file) or "packed" (in the block store).
    storage: str
    own_bytes: int
    shared_bytes: int

    @classmethod
    def from_json(cls, v: Any) -> BackupInfo:
        v = _obj(v, "backup")
        rows = v.get("rows")
        return cls(
            id=str(v["id"]),
            created_at=str(v["created_at"]),
            age_seconds=_int(v["age_seconds"]),
            bytes=_int(v["bytes"]),
            tables=_int(v["tables"]),
            rows=None if rows is None else _int(rows),
            verified=bool(v["verified"]),
            verification_level=str(v["verification_level"]),
            pinned=bool(v["pinned"]),
            latest=bool(v["latest"]),
            newest_fully_verified=bool(v["newest_fully_verified"]),
            wal_folded=bool(v["wal_folded"]),
            storage=str(v["storage"]),
            own_bytes=_int(v.get("own_bytes", v["bytes"])),
            shared_bytes=_int(v.get("shared_bytes", 0)),
        )


@dataclass(frozen=True)
class BackupList:
    """What ``ducksafe list --json`` reports: the stored backups, newest first."""

    backup_dir: str
    backups: Tuple[BackupInfo, ...]
    unfinished_restores: Tuple[PendingRestore, ...] = ()
    #: Files that look like backups but have no usable manifest, each with why.
    unmanaged: Tuple[Tuple[str, str], ...] = ()
    total_bytes: int = 0
    #: None before the first backup (the backup directory does not exist yet).
    available_bytes: Optional[int] = None
    warnings: Tuple[str, ...] = ()
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, v: Any) -> BackupList:
        v = _obj(v, "listing")
        avail = v.get("available_bytes")
        return cls(
            backup_dir=str(v["backup_dir"]),
            backups=tuple(BackupInfo.from_json(b) for b in v["backups"]),
            unfinished_restores=tuple(
                PendingRestore.from_json(p) for p in v.get("unfinished_restores", ())
            ),
            unmanaged=tuple(
                (str(u["file"]), str(u["why"]))
                for u in (_obj(x, "unmanaged") for x in v.get("unmanaged", ()))
            ),
            total_bytes=_int(v.get("total_bytes", 0)),
            available_bytes=None if avail is None else _int(avail),
            warnings=_strs(v.get("warnings", ())),
            raw=dict(v),
        )

    @property
    def latest(self) -> Optional[BackupInfo]:
        """The backup ``latest`` names, if any."""
        return next((b for b in self.backups if b.latest), None)
