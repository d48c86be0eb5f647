"""The calls: one process of the ducksafe binary each."""

from __future__ import annotations

import collections.abc
import errno
import json
import operator
import os
import signal
import subprocess
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from ._binary import find_binary
from ._errors import (
    BinaryNotFound,
    DucksafeError,
    HookTimeout,
    HookUnavailable,
    error_for,
)
from ._types import (
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
    PROTOCOL_VERSION,
    BackupList,
    ConfigArg,
    Request,
    Response,
    RunInfo,
)

PathArg = Union[str, "os.PathLike[str]", None]

#: The exit code reported when ducksafe's answer was unusable and its own exit code was 0.
_EXIT_INTERNAL = 70


def _status(returncode: int) -> int:
    """A process's exit status as a shell says it: 128 + N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _run(
    argv: Sequence[str],
    stdin: bytes,
    what: str,
    *,
    cwd: PathArg,
    env: Optional[Mapping[str, str]],
    timeout: Optional[float],
) -> "subprocess.CompletedProcess[bytes]":
    try:
        # subprocess.run is looked up at each call (a test may wrap it); stderr (ducksafe's
        # log) goes to this process's stderr.
        return subprocess.run(
            list(argv),
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=None,
            cwd=cwd,
            env=None if env is None else dict(env),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise HookTimeout(
            f"`{argv[0]}` did not answer `{what}` within {timeout} s and was "
            "killed; if it was restoring, see docs/runbook.md, \"An interrupted restore\"",
            EXIT_TIMEOUT,
        ) from e
    except OSError as e:
        if cwd is not None and not os.path.isdir(cwd):
            raise HookUnavailable(
                f"cannot run `{argv[0]}` in `{os.fspath(cwd)}`: {e.strerror or e}", EXIT_NOT_FOUND
            ) from e
        if e.errno in _NO_PROGRAM:
            # No such program, or no program at that name: there is no ducksafe binary to run.
            raise BinaryNotFound(
                f"cannot run `{argv[0]}`: {e.strerror or e}; name the ducksafe binary with"
                " `binary=` or $DUCKSAFE_BIN, or install the wheel built from the checkout"
                " (docs/integrations.md, \"A Python orchestrator\")",
                EXIT_NOT_FOUND,
            ) from e
        raise HookUnavailable(f"cannot run `{argv[0]}`: {e}", EXIT_NOT_FOUND) from e


#: The errors of starting a program that say there is none to run at that name.
_NO_PROGRAM = frozenset(
    (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENOEXEC)
)


def _unusable(p: "subprocess.CompletedProcess[bytes]", argv0: str, why: str) -> HookUnavailable:
    code = _status(p.returncode)
    how = (
        f"killed by {_signal_name(p.returncode)}"
        if p.returncode < 0
        else f"exit {p.returncode}"
    )
    return HookUnavailable(
        f"`{argv0}` gave no valid answer ({how}): {why}", code if code else _EXIT_INTERNAL
    )


def call(
    request: Request,
    *,
    binary: Optional[str] = None,
    cwd: PathArg = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
) -> Response:
    """Sends one request to ``ducksafe hook`` and returns the parsed response, whatever it says.

    Raises :class:`HookUnavailable` when ducksafe cannot be run or does not keep the protocol:
    its stdout is not exactly one JSON line of protocol v1, or the line's ``exit_code`` is not
    the process's; :class:`HookTimeout` when it did not answer within ``timeout`` seconds (it is
    then killed). ducksafe's log (stderr) is passed through to this process's stderr.
    """
    argv = [find_binary(binary), "hook"]
    p = _run(
        argv,
        json.dumps(request.to_json()).encode(),
        request.event,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    try:
        lines = p.stdout.decode("utf-8").splitlines()
        if len(lines) != 1:
            raise ValueError(f"expected one line on stdout, got {len(lines)}")
        response = Response.from_json(json.loads(lines[0]))
    except (ValueError, KeyError, TypeError) as e:
        raise _unusable(p, " ".join(argv), str(e)) from e
    if response.protocol_version != PROTOCOL_VERSION:
        raise _unusable(
            p, " ".join(argv), f"it speaks protocol_version {response.protocol_version}"
        )
    if response.exit_code != p.returncode:
        raise _unusable(
            p, " ".join(argv), f"its answer says exit_code {response.exit_code}"
        )
    return response


def pre_run(
    config: ConfigArg = None,
    *,
    request_id: Optional[str] = None,
    dry_run: bool = False,
    binary: Optional[str] = None,
    cwd: PathArg = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
) -> Response:
    """Backs up and verifies the database before a run.

    Returns the ``proceed`` response (``.backup`` is the verified backup, ``.backup_id`` what
    post_run needs, ``.rollback`` how to undo the run). Raises otherwise, and then the run must
    not start: :class:`DucksafeBusy` (exit 75, retry later), another :class:`DucksafeError`
    subclass for the rest.

    After a ``timeout`` (:class:`HookTimeout`), the killed pre_run may already have recorded
    the run in the database's lease, naming this process: every other guarded run of the
    database would answer ``lock_busy`` until this process exits. So the run is ended at once
    with a post_run that keeps the database (``outcome: failure``, ``on_failure: keep``: the
    run never started, nothing is restored), and the exception says whether that worked.
    """
    request = Request("pre_run", config=config, request_id=request_id, dry_run=dry_run)
    try:
        r = call(request, binary=binary, cwd=cwd, env=env, timeout=timeout)
    except HookTimeout as e:
        if dry_run:
            raise  # a dry run records nothing
        raise _released(e, request, binary=binary, cwd=cwd, env=env, timeout=timeout) from (
            e.__cause__
        )
    if r.decision != "proceed" or r.exit_code != 0:
        raise error_for(r, "pre_run")
    return r


#: The least time the post_run that ends a timed-out pre_run's run is given: it only keeps.
_RELEASE_TIMEOUT = 60.0


def _released(
    e: HookTimeout,
    request: Request,
    *,
    binary: Optional[str],
    cwd: PathArg,
    env: Optional[Mapping[str, str]],
    timeout: Optional[float],
) -> HookTimeout:
    """The HookTimeout of a pre_run, once the run it may have recorded is ended: a post_run
    from this process, which the lease names, with no backup id (unknown: the answer never
    came) and an outcome that restores nothing."""
    what = (
        f"`{find_binary(binary)}` did not answer `pre_run` within {timeout} s and was killed: do"
        " not start the run (a backup it finished stays, harmless; an unfinished one is removed"
        " by the next backup)"
    )
    try:
        post = post_run(
            None,
            outcome="failure",
            on_failure="keep",
            config=request.config,
            request_id=request.request_id,
            binary=binary,
            cwd=cwd,
            env=env,
            timeout=max(timeout or 0.0, _RELEASE_TIMEOUT),
        )
    except DucksafeError as failed:
        return HookTimeout(
            f"{what}; the run it may have recorded could not be ended ({failed}): other guarded"
            " runs of this database answer `lock_busy` until this process exits; retry with"
            " `ducksafe.post_run(None, outcome=\"failure\", on_failure=\"keep\", ...)`",
            EXIT_TIMEOUT,
        )
    return HookTimeout(
        f"{what}; the run it may have recorded was ended (post_run answered `{post.decision}`,"
        " nothing restored): other guarded runs of this database are not kept waiting",
        EXIT_TIMEOUT,
    )


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
    cwd: PathArg = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
    backup_sha256: Optional[str] = None,
) -> Response:
    """Reports how the run ended.

    ``outcome`` defaults to success exactly when ``exit_code`` is 0. After a failure the backup
    is restored when ``on_failure="restore"``, or when the configuration says
    RESTORE_ON_FAILURE and ``on_failure`` is not ``"keep"``. Returns the response (``kept``,
    ``restored`` with ``.restore``, ``skipped``); raises :class:`RestoreFailed` when the restore
    failed (see docs/runbook.md) and another :class:`DucksafeError` for other errors.
    ``backup_sha256`` (the pre_run answer's ``backup.sha256``) makes ducksafe refuse to restore
    any other content under that id.
    """
    if exit_code is not None:
        if isinstance(exit_code, bool):
            # bool is an int to Python, never to the protocol: ducksafe would refuse the request.
            raise TypeError(
                f"post_run: `exit_code` is the run's exit status (an int), not `{exit_code!r}`"
            )
        exit_code = operator.index(exit_code)  # numpy.int64 and the like; TypeError otherwise
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
            backup_sha256=backup_sha256,
        ),
        binary=binary,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    if not r.ok:
        raise error_for(r, "post_run")
    return r


def validate(
    config: ConfigArg = None,
    *,
    request_id: Optional[str] = None,
    binary: Optional[str] = None,
    cwd: PathArg = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
) -> Response:
    """Checks the configuration, the database and the backup directory; writes nothing.

    Returns the ``valid`` response; raises :class:`ConfigError` (``.errors`` lists every
    violation with its JSON Pointer), :class:`NotFound`, or another :class:`DucksafeError`.
    """
    r = call(
        Request("validate", config=config, request_id=request_id),
        binary=binary,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    if not r.ok:
        raise error_for(r, "validate")
    return r


def _cli(
    args: List[str],
    config: Union[str, "os.PathLike[str]", None],
    what: str,
    *,
    binary: Optional[str],
    cwd: PathArg,
    env: Optional[Mapping[str, str]],
    timeout: Optional[float],
) -> Tuple[int, Any]:
    """Runs an operator command with ``--json``; returns its exit status and parsed report."""
    if isinstance(config, collections.abc.Mapping):
        raise TypeError(
            f"{what}: the operator commands read a configuration file; pass its path "
            "(an inline configuration works with pre_run, post_run and validate)"
        )
    argv = [find_binary(binary)]
    if config is not None:
        argv += ["--config", os.fspath(config)]
    argv += args + ["--json"]
    p = _run(argv, b"", what, cwd=cwd, env=env, timeout=timeout)
    try:
        report = json.loads(p.stdout.decode("utf-8"))
        if not isinstance(report, dict):
            raise TypeError(f"expected a JSON object, got {type(report).__name__}")
    except (ValueError, TypeError) as e:
        raise _unusable(p, " ".join(argv), str(e)) from e
    return p.returncode, report


def restore(
    backup: str = "latest",
    *,
    config: Union[str, "os.PathLike[str]", None] = None,
    expect_sha256: Optional[str] = None,
    dry_run: bool = False,
    binary: Optional[str] = None,
    cwd: PathArg = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
) -> Response:
    """Puts a backup back in place of the database (``ducksafe restore BACKUP``); the replaced
    database and WAL files go to quarantine.

    ``backup`` is ``"latest"``, an id, or a path inside the backup directory; with
    ``expect_sha256`` the restore refuses, changing nothing, unless the backup has that
    SHA-256. Stop every process that has the database open first. Returns the ``restored``
    response (``.backup``, ``.restore.quarantine``, ``.restore.undo``); raises
    :class:`NotFound` for an unknown backup, :class:`DucksafeBusy` while the database is open,
    :class:`RestoreFailed` or another :class:`DucksafeError` otherwise.
    """
    args = ["restore", backup]
    if expect_sha256 is not None:
        args += ["--expect-sha256", expect_sha256]
    if dry_run:
        args.append("--dry-run")
    code, report = _cli(
        args, config, "restore", binary=binary, cwd=cwd, env=env, timeout=timeout
    )
    try:
        r = Response.from_json(report)
    except (ValueError, KeyError, TypeError) as e:
        raise HookUnavailable(f"`ducksafe restore --json` gave no valid answer: {e}", code or 70)
    if code != 0 or not r.ok:
        raise error_for(r, "restore")
    return r


def list_backups(
    config: Union[str, "os.PathLike[str]", None] = None,
    *,
    binary: Optional[str] = None,
    cwd: PathArg = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
) -> BackupList:
    """The stored backups, newest first (``ducksafe list``), with interrupted restores and
    files in the backup directory that are not backups. Before the first backup the list is
    empty. Raises :class:`NotFound`, :class:`ConfigError` or another :class:`DucksafeError`."""
    code, report = _cli(
        ["list"], config, "list", binary=binary, cwd=cwd, env=env, timeout=timeout
    )
    if code != 0:
        # A failed operator command reports {"status": "error", "errors": [...], "exit_code"}.
        try:
            failed = Response.from_json(
                {
                    "protocol_version": PROTOCOL_VERSION,
                    "request_id": "",
                    "event": None,
                    "decision": "abort",
                    "status": "error",
                    "reason": "; ".join(
                        str(e.get("message", "")) for e in report.get("errors", ())
                    ),
                    **report,
                }
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise HookUnavailable(f"`ducksafe list --json` failed (exit {code}): {e}", code)
        raise error_for(failed, "list")
    try:
        return BackupList.from_json(report)
    except (ValueError, KeyError, TypeError) as e:
        raise HookUnavailable(f"`ducksafe list --json` gave no valid answer: {e}", 70) from e


__all__ = [
    "DucksafeError",
    "call",
    "list_backups",
    "post_run",
    "pre_run",
    "restore",
    "validate",
]
