"""``guarded_run``: a backup before a block of work, the run's outcome reported after it."""

from __future__ import annotations

import collections.abc
import contextlib
import operator
import os
import signal
import threading
import warnings
from typing import Any, Dict, Iterator, Mapping, Optional, Set

from ._client import PathArg, post_run, pre_run
from ._errors import UsageError
from ._types import BackupRef, ConfigArg, Response


class GuardedRun:
    """What :func:`guarded_run` yields: the pre_run answer on entry, the post_run answer
    after the block.

    Set ``exit_code`` (or call :meth:`fail`) inside the block when the work failed without an
    exception, e.g. to the exit status of a subprocess: the block then counts as a failed run
    with that code, and the backup is restored when the configuration (or ``on_failure``) says
    so. No exception is raised for it: read ``post.decision`` (``kept`` or ``restored``).
    """

    __slots__ = ("pre", "_post", "_exit_code", "abandoned")

    def __init__(self, pre: Response) -> None:
        #: The pre_run answer: the verified backup (``backup``) and how to undo the run
        #: (``rollback``).
        self.pre = pre
        self._post: Optional[Response] = None
        self._exit_code: Optional[int] = None
        #: True when the block never ended: the generator it ran in was closed (or collected)
        #: while suspended inside it (``GeneratorExit``). See :class:`AbandonedRun`.
        self.abandoned = False

    @property
    def post(self) -> Response:
        """The post_run answer (``decision``: ``kept`` or ``restored``), once the block has
        ended and post_run answered. Read before that (inside the block), or after a post_run
        that raised, it raises RuntimeError: there is no answer to read."""
        if self._post is None:
            raise RuntimeError(
                "`run.post` is read after the block: post_run has not answered yet (the block"
                " is running), or it raised (that exception says why)"
            )
        return self._post

    @post.setter
    def post(self, answer: Response) -> None:
        self._post = answer

    @property
    def exit_code(self) -> Optional[int]:
        """The run's exit status as the caller saw it; None or 0 is a success.

        Assigning checks the value: an int from 0 to 255 is kept; a subprocess's returncode -N
        (killed by signal N) becomes 128 + N, as a shell reports it; None is "not set". A bool
        raises TypeError (``True`` is no exit status: call :meth:`fail`), another int
        ValueError, another type TypeError, at the assignment rather than at post_run."""
        return self._exit_code

    @exit_code.setter
    def exit_code(self, value: Optional[int]) -> None:
        self._exit_code = None if value is None else exit_status(value, "run.exit_code")

    @property
    def backup_id(self) -> str:
        """The id of the verified backup taken on entry."""
        return self.pre.backup_id

    @property
    def backup(self) -> BackupRef:
        """The verified backup taken on entry."""
        if self.pre.backup is None:
            raise ValueError("the pre_run answer names no backup (dry run)")
        return self.pre.backup

    @property
    def failed(self) -> bool:
        """Whether the run counts as failed so far (an exit status other than 0 was set)."""
        return bool(self._exit_code)

    @property
    def restored(self) -> bool:
        """Whether post_run put the backup back."""
        return self._post is not None and self._post.decision == "restored"

    def fail(self, exit_code: int = 1) -> None:
        """Marks the run failed with ``exit_code`` (not 0; checked as ``exit_code`` is)."""
        code = exit_status(exit_code, "run.fail()")
        if code == 0:
            raise ValueError("run.fail(): a failed run needs an exit code other than 0")
        self._exit_code = code

    def __repr__(self) -> str:
        return (
            f"GuardedRun(backup_id={self.pre.backup.id if self.pre.backup else None!r}, "
            f"exit_code={self._exit_code!r}, "
            f"post={self._post.decision if self._post else None!r})"
        )


def exit_status(value: Any, what: str) -> int:
    """``value`` as a process exit status (0 to 255), or TypeError / ValueError that says why
    not. A subprocess's returncode -N (killed by signal N) is 128 + N, as a shell says it."""
    if isinstance(value, bool):
        # bool is an int to Python, never to an exit status (nor to the protocol).
        raise TypeError(
            f"{what} takes an exit status (an int, 0 for success), not `{value!r}`;"
            " call run.fail() for a failed run"
        )
    try:
        code = operator.index(value)  # an int, or an int-like such as numpy.int64
    except TypeError:
        raise TypeError(
            f"{what} takes an exit status (an int, 0 for success), not"
            f" {type(value).__name__} `{value!r}`"
        ) from None
    if 0 <= code <= 255:
        return code
    if -127 <= code < 0:
        return 128 - code
    raise ValueError(
        f"{what}: an exit status is 0 to 255 (or a subprocess's returncode -N, killed by signal"
        f" N: 128 + N), not {code}"
    )


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived during a guarded block (a `timeout`, a closed terminal, a
    scheduler stopping the job) and the application has no handler of its own for it: the
    block ends here, the run counts as failed with 128 + N, post_run runs (restoring when
    asked), and then the process ends by that signal, as it would have without the block.

    An application's own handler runs instead, as it would without the block; it may raise
    ``Terminated(signum)`` itself for this same ending."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class AbandonedRun(RuntimeWarning):
    """A guarded block that never ended: it ran inside a generator, and the generator was
    closed (``close()``, a ``for`` loop left by ``break``, garbage collection) while suspended
    in the block, which then got ``GeneratorExit``.

    Nothing says whether the block's work was complete: by default (``abandoned="failure"``)
    the run counts as failed with exit code 1, so post_run restores when ``on_failure`` or
    the configuration asks for it, and this warning says so, with post_run's decision.
    ``guarded_run(..., abandoned="success")`` says instead that a consumer stopping early
    leaves complete work: the run is a success (kept) and nothing is warned. Make it an error
    with ``warnings.simplefilter("error", ducksafe.AbandonedRun)`` (post_run has run by then;
    the exception goes to whoever closed the generator)."""


#: The values of ``guarded_run``'s ``abandoned``: how a block whose generator was closed counts.
_ABANDONED = ("failure", "success")


def exit_code_of(e: BaseException) -> int:
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
def _stops_end_the_block() -> Iterator[None]:
    """For the block: SIGTERM and SIGHUP that would have killed the process (their default
    action) end the block with :class:`Terminated` instead, so that post_run runs first.

    A handler the application installed before the block is left in place: it runs as it
    would without the block, and decides (raise from it to end the block: ``sys.exit(143)``,
    or ``raise ducksafe.Terminated(signum)`` for the same end as without a handler; return to
    let the block go on). A signal the application ignores (``nohup``) stays ignored. Afterwards
    each signal gets back the handler it had, unless the block installed one of its own, which
    is kept. Main thread only: Python takes signals there alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # SIG_DFL only: SIG_IGN is the application's choice, a callable its own handler, and None
    # a handler installed outside Python, which could not be put back.
    ours = [s for s in _STOPS if signal.getsignal(s) is signal.SIG_DFL]
    for s in ours:
        signal.signal(s, _terminate)
    try:
        yield
    finally:
        for s in ours:
            if signal.getsignal(s) is _terminate:
                signal.signal(s, signal.SIG_DFL)


@contextlib.contextmanager
def _stops_ignored() -> Iterator[None]:
    """For post_run: SIGTERM and SIGHUP ignored, by this process and by ducksafe, which
    inherits that (a handler would be reset to the default in it), so that a second signal
    cannot cut a restore short; each signal's handler, whatever it was, is back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # None: a handler installed outside Python, which could not be put back: left alone.
    previous = {s: h for s in _STOPS for h in [signal.getsignal(s)] if h is not None}
    for s in previous:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _terminate(signum: int, _frame: Any) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def guarded_run(
    config: ConfigArg = None,
    *,
    on_failure: Optional[str] = None,
    request_id: Optional[str] = None,
    binary: Optional[str] = None,
    cwd: PathArg = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
    abandoned: str = "failure",
) -> Iterator[GuardedRun]:
    """A verified backup on entry; the run's outcome to post_run on exit.

        with ducksafe.guarded_run(config="config.yaml") as run:
            run.exit_code = subprocess.run(["dbt", "build"]).returncode

    On entry, pre_run backs the database up and verifies it; when it does not answer
    ``proceed`` the block does not run (:class:`DucksafeBusy`, exit 75: retry later; another
    :class:`DucksafeError` otherwise). On exit, post_run gets the outcome: a success when the
    block returns with ``run.exit_code`` None or 0; a failure with ``run.exit_code`` when the
    caller set another one; and when the block raises, a failure with the exit code Python
    would end with: ``SystemExit(N)`` is N (``sys.exit()`` and ``sys.exit(0)`` succeed, a
    message is 1), Ctrl-C 130, SIGTERM or SIGHUP 128 + N (the process then ends by that signal,
    after post_run; an application's own handler for them runs instead and decides, and an
    ignored one stays ignored), any other exception 1. ``run.exit_code`` is checked when set
    (see :class:`GuardedRun`), and a ``sys.exit(0)`` after a failure carries the failure's code. After a failure post_run restores the backup when
    ``on_failure="restore"`` or the configuration says RESTORE_ON_FAILURE (``on_failure="keep"``
    keeps the failed run's database); the replaced files go to quarantine. Then the exception
    propagates. A post_run that fails raises :class:`RestoreFailed` (or another error), chained
    to the block's exception.

    A block inside a generator that is closed before the block ends (the consumer stopped
    iterating) gets ``GeneratorExit``: its work may be half done, so by default
    (``abandoned="failure"``) it counts as failed with exit code 1, and an
    :class:`AbandonedRun` warning says so; ``abandoned="success"`` counts it as a success
    (for a generator whose consumer may stop early without leaving work half done).

    Close every DuckDB connection to the database inside the block: a restore needs the
    database to itself. ``timeout`` applies to pre_run only: a restore is never cut short.
    """
    if abandoned not in _ABANDONED:
        raise ValueError(
            f"guarded_run: `abandoned` is \"failure\" or \"success\", not {abandoned!r}"
        )
    # Both calls resolve a relative configuration path (or `./config.yaml`, or an inline
    # configuration's relative DB_PATH) from the folder the block started in: an `os.chdir`
    # inside the block must not make post_run restore another project.
    cwd = os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd())
    if config is not None and not isinstance(config, collections.abc.Mapping):
        config = os.path.join(cwd, os.fspath(config))
    # An inline configuration is not recognised as the same one twice: only a path is.
    with _one_at_a_time(config if isinstance(config, str) else None):
        pre = pre_run(
            config, request_id=request_id, binary=binary, cwd=cwd, env=env, timeout=timeout
        )
        run = GuardedRun(pre)
        kw: Dict[str, Any] = dict(
            config=config,
            request_id=pre.request_id,
            binary=binary,
            cwd=cwd,
            env=env,
            backup_sha256=pre.backup.sha256 if pre.backup is not None else None,
        )
        yield from _guarded(run, pre, kw, on_failure, abandoned)


@contextlib.contextmanager
def _one_at_a_time(config: Optional[str]) -> Iterator[None]:
    """Refuses a guarded run of ``config`` while another is in progress in this process (nested,
    or on another thread): the inner run's post_run would end the outer run's turn."""
    if config is None:
        yield
        return
    with _ACTIVE_LOCK:
        if config in _ACTIVE:
            raise UsageError(
                f"a guarded run of `{config}` is already in progress in this process (nested,"
                " or on another thread): runs of one database take turns, and the inner run's"
                " post_run would end the outer one's turn",
                64,
                None,
            )
        _ACTIVE.add(config)
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(config)


#: The configurations with a guarded run in progress in this process.
_ACTIVE: Set[str] = set()
_ACTIVE_LOCK = threading.Lock()


def _guarded(
    run: "GuardedRun",
    pre: Any,
    kw: Dict[str, Any],
    on_failure: Optional[str],
    abandoned: str,
) -> Iterator["GuardedRun"]:
    try:
        with _stops_end_the_block():
            yield run
    except BaseException as e:
        code = exit_code_of(e)
        if isinstance(e, GeneratorExit):
            # The block never ended (its generator was closed): no proof of failure, none of
            # success. The caller's `abandoned` decides, and a failure is said, not silent.
            run.abandoned = True
            if abandoned == "success":
                code = 0
        if code == 0 and run.exit_code:
            # `sys.exit(0)` (or `sys.exit()`) after run.fail(3): the run is reported failed
            # with 3, and the process must not then end with 0, as if nothing had failed.
            code = run.exit_code
            if isinstance(e, SystemExit):
                e.code = code
        # Nothing may cut the restore short: a second SIGTERM or SIGHUP is ignored meanwhile,
        # and ducksafe inherits that.
        with _stops_ignored():
            if code == 0:
                run.post = post_run(pre.backup_id, exit_code=0, **kw)
            else:
                run.exit_code = code
                run.post = post_run(pre.backup_id, exit_code=code, on_failure=on_failure, **kw)
        if run.abandoned and code != 0:
            warnings.warn(
                AbandonedRun(
                    f"the guarded run of backup `{pre.backup_id}` was abandoned: the generator"
                    " it ran in was closed before the block ended (GeneratorExit), so it counts"
                    f" as a failed run (exit code {code}); post_run answered"
                    f" `{run.post.decision}`. Pass guarded_run(..., abandoned=\"success\") if"
                    " stopping early leaves the work complete"
                ),
                stacklevel=2,
            )
        if isinstance(e, Terminated):
            # End as the signal would have ended the process: the caller (a shell, `timeout`)
            # sees 128 + N.
            signal.signal(e.signum, signal.SIG_DFL)
            os.kill(os.getpid(), e.signum)
        raise
    code = run.exit_code or 0
    with _stops_ignored():
        if code == 0:
            run.post = post_run(pre.backup_id, exit_code=0, **kw)
        else:
            run.post = post_run(pre.backup_id, exit_code=code, on_failure=on_failure, **kw)


#: The name ``hooks/ducksafe_hook.py`` gave the context manager; the same function.
protected_run = guarded_run
#: The name ``hooks/ducksafe_hook.py`` gave the yielded object; the same class.
ProtectedRun = GuardedRun
