"""Unit tests of the `ducksafe` Python package against a fake binary (fake_ducksafe.py): the
protocol's edge cases, the typed errors, the binary lookup and guarded_run's outcomes.

    python3 -m unittest discover -s tests/python -v

The package is the checkout's (hooks/python) unless DUCKSAFE_TEST_INSTALLED=1, which tests the
one installed in this Python (the wheel test does). Standard library only. Run by
tests/it/integrations/python.rs (`cargo test`).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
import warnings
from pathlib import Path
from typing import Any, Dict, Generator, List, Optional
from unittest import mock

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if os.environ.get("DUCKSAFE_TEST_INSTALLED") != "1":
    sys.path.insert(0, str(REPO / "hooks" / "python"))

import ducksafe  # noqa: E402
from ducksafe import _binary  # noqa: E402


def answer(event: Optional[str], decision: str, exit_code: int, **extra: Any) -> Dict[str, Any]:
    """A protocol v1 response, as ducksafe writes it."""
    r: Dict[str, Any] = {
        "protocol_version": 1,
        "request_id": "req-1",
        "event": event,
        "status": "ok" if exit_code == 0 else "error",
        "decision": decision,
        "reason": f"{decision} for the test",
        "warnings": [],
        "errors": [],
        "exit_code": exit_code,
        "duration_ms": 3,
    }
    r.update(extra)
    return r


def error(code: str, *, retryable: bool = False, path: Optional[str] = None) -> Dict[str, Any]:
    e: Dict[str, Any] = {"code": code, "message": f"`{code}` for the test", "retryable": retryable}
    if path is not None:
        e["path"] = path
    return e


BACKUP = {
    "id": "simulation_20261201_120000",
    "path": "/srv/sim/backups/simulation_20261201_120000.duckdb",
    "bytes": 2109440,
    "sha256": "7d331ed1023e47492e78c36f063b697dc73e535b69d69c6139a8a584407a9e63",
    "created_at": "2026-12-01T12:00:00Z",
    "verified": True,
    "verification": ["size", "sha256", "block_checksums", "open", "row_counts", "fingerprints"],
}
PROCEED = answer(
    "pre_run",
    "proceed",
    0,
    backup=BACKUP,
    rollback={
        "strategy": "restore_backup",
        "backup_id": BACKUP["id"],
        "command": ["ducksafe", "restore", BACKUP["id"]],
        "request": {"event": "post_run"},
        "manual": ["# 1. stop every process"],
    },
    rotation={"kept": [BACKUP["id"]], "deleted": [{"id": "old", "bytes": 1, "reason": "number 8"}]},
    space={"available_bytes": 10, "required_bytes": 5, "backups_bytes": 3},
    paths={"db_path": "/srv/sim/simulation.duckdb"},
    future_field={"kept": "in raw"},
)
RESTORE: Dict[str, Any] = {
    "backup_id": BACKUP["id"],
    "database": "/srv/sim/simulation.duckdb",
    "quarantine": "/srv/sim/backups/quarantine/x_restore",
    "quarantined_files": ["/srv/sim/backups/quarantine/x_restore/simulation.duckdb"],
    "undo": ["mv -f a b"],
    "duration_ms": 7,
}
LOCKED = answer(
    "pre_run",
    "abort",
    75,
    errors=[error("database_locked", retryable=True)],
)


def line(v: Any) -> str:
    return json.dumps(v) + "\n"


class Fake:
    """A fake ducksafe in a temporary folder: a launcher, its script and its log."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.binary = tmp / "ducksafe"
        self.binary.write_text(
            f"#!/bin/sh\nexec {sys.executable} {HERE / 'fake_ducksafe.py'} \"$@\"\n"
        )
        self.binary.chmod(self.binary.stat().st_mode | stat.S_IXUSR)
        self.script = tmp / "script.json"
        self.log = tmp / "log.jsonl"
        self.env = dict(
            os.environ,
            FAKE_DUCKSAFE_SCRIPT=str(self.script),
            FAKE_DUCKSAFE_LOG=str(self.log),
        )

    def acts(self, **by_event: Dict[str, Any]) -> None:
        self.script.write_text(json.dumps({k.replace("any", "*"): v for k, v in by_event.items()}))

    def calls(self) -> List[Dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(x) for x in self.log.read_text().splitlines()]

    def requests(self) -> List[Dict[str, Any]]:
        return [json.loads(c["stdin"]) for c in self.calls() if c["argv"][:1] == ["hook"]]

    @property
    def kw(self) -> Dict[str, Any]:
        return {"binary": str(self.binary), "env": self.env}


class FakeCase(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.fake = Fake(Path(tmp.name))


class ProtocolEdges(FakeCase):
    """What comes back is one JSON line of protocol v1, or HookUnavailable: never a guess."""

    def unavailable(self, act: Dict[str, Any], exit_code: int, says: str) -> None:
        self.fake.acts(any=act)
        with self.assertRaises(ducksafe.HookUnavailable) as cm:
            ducksafe.pre_run("config.yaml", **self.fake.kw)
        e = cm.exception
        self.assertIs(type(e), ducksafe.HookUnavailable)
        self.assertEqual(e.exit_code, exit_code)
        self.assertIsNone(e.response)
        self.assertEqual(e.codes, ())
        self.assertIsNone(e.code)
        self.assertFalse(e.retryable)
        self.assertIn(says, str(e))

    def test_non_json_stdout(self) -> None:
        self.unavailable({"stdout": "Segmentation fault\n", "exit": 0}, 70, "exit 0")

    def test_non_json_keeps_a_failing_exit_code(self) -> None:
        self.unavailable({"stdout": "not json\n", "exit": 74}, 74, "exit 74")

    def test_two_lines(self) -> None:
        self.unavailable({"stdout": line(PROCEED) + line(PROCEED)}, 70, "got 2")

    def test_a_log_line_before_the_answer(self) -> None:
        self.unavailable({"stdout": "INFO starting\n" + line(PROCEED)}, 70, "got 2")

    def test_exit_code_without_json(self) -> None:
        # 75 without an answer is not "busy": only the answer says what happened.
        self.unavailable({"stdout": "", "exit": 75}, 75, "got 0")

    def test_killed_by_a_signal(self) -> None:
        self.unavailable({"signal": int(signal.SIGKILL)}, 128 + 9, "killed by SIGKILL")

    def test_not_utf8(self) -> None:
        self.unavailable({"stdout_hex": "ff fe 0a"}, 70, "utf-8")

    def test_json_that_is_not_an_object(self) -> None:
        self.unavailable({"stdout": "[1, 2]\n"}, 70, "JSON object")

    def test_an_answer_missing_a_field(self) -> None:
        broken = dict(PROCEED)
        del broken["decision"]
        self.unavailable({"stdout": line(broken)}, 70, "decision")

    def test_another_protocol_version(self) -> None:
        self.unavailable({"stdout": line(dict(PROCEED, protocol_version=2))}, 70, "protocol_version 2")

    def test_exit_code_that_contradicts_the_answer(self) -> None:
        self.unavailable({"stdout": line(PROCEED), "exit": 1}, 1, "exit_code 0")

    def test_a_bool_is_no_exit_code(self) -> None:
        self.unavailable({"stdout": line(dict(PROCEED, exit_code=False))}, 70, "integer")

    def test_timeout(self) -> None:
        self.fake.acts(
            pre_run={"sleep": 30, "stdout": line(PROCEED)},
            post_run={"stdout": line(answer("post_run", "kept", 0))},
        )
        with self.assertRaises(ducksafe.HookTimeout) as cm:
            ducksafe.pre_run("config.yaml", timeout=0.5, **self.fake.kw)
        self.assertEqual(cm.exception.exit_code, ducksafe.EXIT_TIMEOUT)
        self.assertNotIsInstance(cm.exception, ducksafe.HookUnavailable)
        self.assertIsInstance(cm.exception, ducksafe.DucksafeError)

    def test_a_pre_run_timeout_ends_the_run_it_may_have_recorded(self) -> None:
        # Killed after it recorded the run (the lease names this process), the pre_run would
        # keep every other guarded run busy until this process exits: a post_run that keeps
        # (the run never started) ends it, with this request's configuration and id.
        self.fake.acts(
            pre_run={"sleep": 30, "stdout": line(PROCEED)},
            post_run={"stdout": line(answer("post_run", "kept", 0))},
        )
        with self.assertRaises(ducksafe.HookTimeout) as cm:
            ducksafe.pre_run("config.yaml", request_id="r-7", timeout=0.5, **self.fake.kw)
        self.assertIn("do not start the run", str(cm.exception))
        self.assertIn("was ended (post_run answered `kept`", str(cm.exception))
        pre, post = self.fake.requests()
        self.assertEqual(pre["event"], "pre_run")
        self.assertEqual(
            post,
            {
                "protocol_version": 1,
                "event": "post_run",
                "request_id": "r-7",
                "config": {"path": "config.yaml"},
                "run": {"outcome": "failure"},
                "on_failure": "keep",
            },
        )

    def test_a_pre_run_timeout_says_when_the_run_could_not_be_ended(self) -> None:
        refused = answer("post_run", "kept", 75, errors=[error("lock_busy", retryable=True)])
        self.fake.acts(
            pre_run={"sleep": 30, "stdout": line(PROCEED)},
            post_run={"stdout": line(refused), "exit": 75},
        )
        with self.assertRaises(ducksafe.HookTimeout) as cm:
            ducksafe.pre_run("config.yaml", timeout=0.5, **self.fake.kw)
        self.assertEqual(cm.exception.exit_code, ducksafe.EXIT_TIMEOUT)
        self.assertIn("could not be ended", str(cm.exception))
        self.assertIn("lock_busy", str(cm.exception))

    def test_a_dry_run_timeout_ends_nothing(self) -> None:
        self.fake.acts(any={"sleep": 30, "stdout": line(PROCEED)})
        with self.assertRaises(ducksafe.HookTimeout):
            ducksafe.pre_run("config.yaml", dry_run=True, timeout=0.5, **self.fake.kw)
        self.assertEqual([r["event"] for r in self.fake.requests()], ["pre_run"])

    def test_a_binary_that_cannot_run(self) -> None:
        not_executable = self.fake.dir / "not-executable"
        not_executable.write_text("#!/bin/sh\n")
        for binary in [self.fake.dir / "missing", not_executable, self.fake.dir]:
            with self.subTest(binary=binary.name):
                with self.assertRaises(ducksafe.BinaryNotFound) as cm:
                    ducksafe.pre_run("config.yaml", binary=str(binary))
                self.assertEqual(cm.exception.exit_code, 127)
                self.assertIn(str(binary), str(cm.exception))


class Answers(FakeCase):
    def test_proceed_parses_into_dataclasses(self) -> None:
        self.fake.acts(pre_run={"stdout": line(PROCEED)})
        pre = ducksafe.pre_run("config.yaml", request_id="req-1", **self.fake.kw)
        self.assertIsInstance(pre, ducksafe.Response)
        self.assertEqual(pre.decision, "proceed")
        self.assertEqual(pre.backup_id, BACKUP["id"])
        assert pre.backup is not None and pre.rollback is not None and pre.rotation is not None
        self.assertEqual(pre.backup.verification[-1], "fingerprints")
        self.assertEqual(pre.rollback.command[1], "restore")
        self.assertEqual(pre.rotation.deleted, (ducksafe.Deleted("old", 1, "number 8"),))
        self.assertEqual(pre.paths["db_path"], "/srv/sim/simulation.duckdb")
        self.assertEqual(pre.raw["future_field"], {"kept": "in raw"})
        self.assertTrue(pre.ok)
        self.assertFalse(pre.retryable)
        (req,) = self.fake.requests()
        self.assertEqual(
            req,
            {
                "protocol_version": 1,
                "event": "pre_run",
                "request_id": "req-1",
                "config": {"path": "config.yaml"},
            },
        )

    def test_inline_configuration_is_sent_inline(self) -> None:
        self.fake.acts(validate={"stdout": line(answer("validate", "valid", 0))})
        ducksafe.validate({"DB_PATH": "sim.duckdb", "LOG_LEVEL": "INFO"}, **self.fake.kw)
        (req,) = self.fake.requests()
        self.assertEqual(req["config"], {"inline": {"DB_PATH": "sim.duckdb", "LOG_LEVEL": "INFO"}})

    def test_retryable_busy(self) -> None:
        self.fake.acts(pre_run={"stdout": line(LOCKED), "exit": 75})
        with self.assertRaises(ducksafe.DucksafeBusy) as cm:
            ducksafe.pre_run(**self.fake.kw)
        e = cm.exception
        self.assertEqual((e.code, e.exit_code, e.retryable, e.decision), ("database_locked", 75, True, "abort"))
        self.assertTrue(e.errors[0].retryable)

    def test_busy_held_by_this_very_process_is_not_retryable(self) -> None:
        own = dict(LOCKED, reason=f"held by `python3` (PID {os.getpid()})")
        self.fake.acts(pre_run={"stdout": line(own), "exit": 75})
        with self.assertRaises(ducksafe.DucksafeError) as cm:
            ducksafe.pre_run(**self.fake.kw)
        self.assertNotIsInstance(cm.exception, ducksafe.DucksafeBusy)
        self.assertFalse(cm.exception.retryable)
        self.assertIn("open in this very process", str(cm.exception))

    def test_abort_with_errors_raises_the_class_of_its_exit_code(self) -> None:
        cases = [
            (64, "usage", ducksafe.UsageError),
            (65, "invalid_request", ducksafe.UsageError),
            (66, "database_not_found", ducksafe.NotFound),
            (70, "internal", ducksafe.InternalError),
            (73, "insufficient_space", ducksafe.BackupFailed),
            (74, "database_damaged", ducksafe.IntegrityError),
            (76, "unsupported_protocol_version", ducksafe.UsageError),
            (78, "config_invalid", ducksafe.ConfigError),
        ]
        for exit_code, code, kind in cases:
            with self.subTest(code=code):
                self.fake.acts(
                    pre_run={
                        "stdout": line(answer("pre_run", "abort", exit_code, errors=[error(code)])),
                        "exit": exit_code,
                    }
                )
                with self.assertRaises(ducksafe.DucksafeError) as cm:
                    ducksafe.pre_run(**self.fake.kw)
                self.assertIs(type(cm.exception), kind)
                self.assertEqual((cm.exception.code, cm.exception.exit_code), (code, exit_code))
                self.assertFalse(cm.exception.retryable)
                self.assertIn(code, str(cm.exception))

    def test_every_violation_of_an_invalid_configuration(self) -> None:
        invalid = answer(
            "validate",
            "invalid",
            78,
            errors=[
                error("config_invalid", path="/BACKUP_KEEP_LAST"),
                error("config_invalid", path="/LOG_LEVEL"),
            ],
        )
        self.fake.acts(validate={"stdout": line(invalid), "exit": 78})
        with self.assertRaises(ducksafe.ConfigError) as cm:
            ducksafe.validate("config.yaml", **self.fake.kw)
        self.assertEqual(cm.exception.codes, ("config_invalid", "config_invalid"))
        self.assertEqual([x.path for x in cm.exception.errors], ["/BACKUP_KEEP_LAST", "/LOG_LEVEL"])

    def test_restore_failed_after_a_run(self) -> None:
        failed = answer("post_run", "restore_failed", 74, errors=[error("restore_failed")])
        self.fake.acts(post_run={"stdout": line(failed), "exit": 74})
        with self.assertRaises(ducksafe.RestoreFailed) as cm:
            ducksafe.post_run("b1", exit_code=1, on_failure="restore", **self.fake.kw)
        self.assertIsInstance(cm.exception, ducksafe.IntegrityError)
        self.assertEqual(cm.exception.decision, "restore_failed")

    def test_a_restore_failed_while_the_database_was_held_is_not_busy(self) -> None:
        # Exit 75 (a process held the database): retrying the run would back up the failed
        # run's database, so this is RestoreFailed, never a retryable DucksafeBusy.
        failed = answer(
            "post_run",
            "restore_failed",
            75,
            errors=[error("database_locked", retryable=True)],
        )
        self.fake.acts(post_run={"stdout": line(failed), "exit": 75})
        with self.assertRaises(ducksafe.RestoreFailed) as cm:
            ducksafe.post_run("b1", exit_code=1, on_failure="restore", **self.fake.kw)
        self.assertFalse(cm.exception.retryable)
        self.assertNotIsInstance(cm.exception, ducksafe.DucksafeBusy)
        self.assertIn("`database_locked` for the test", str(cm.exception))

    def test_post_run_says_how_the_run_ended(self) -> None:
        restored = answer("post_run", "restored", 0, backup=BACKUP, restore=RESTORE, run={"outcome": "failure", "exit_code": 3})
        self.fake.acts(post_run={"stdout": line(restored)})
        post = ducksafe.post_run("b1", exit_code=3, on_failure="restore", config="c.yaml", **self.fake.kw)
        assert post.restore is not None and post.run is not None
        self.assertEqual(post.restore.quarantined_files, (RESTORE["quarantined_files"][0],))
        self.assertEqual(post.run, ducksafe.RunInfo("failure", 3))
        (req,) = self.fake.requests()
        self.assertEqual(req["run"], {"outcome": "failure", "exit_code": 3})
        self.assertEqual((req["backup_id"], req["on_failure"]), ("b1", "restore"))
        with self.assertRaises(ValueError):
            ducksafe.post_run("b1", **self.fake.kw)


class OperatorCommands(FakeCase):
    LISTING = {
        "backup_dir": "/srv/sim/backups",
        "unfinished_restores": [],
        "backups": [
            {
                "id": "b2", "created_at": "2026-12-01T12:00:00Z", "age_seconds": 5, "bytes": 10,
                "tables": 3, "rows": 94341, "verified": True, "verification_level": "full",
                "pinned": False, "latest": True, "newest_fully_verified": True,
                "wal_folded": False, "storage": "plain", "own_bytes": 10, "shared_bytes": 0,
            },
            {
                "id": "b1", "created_at": "2026-12-01T11:00:00Z", "age_seconds": 3605, "bytes": 9,
                "tables": 3, "rows": None, "verified": True, "verification_level": "quick",
                "pinned": True, "latest": False, "newest_fully_verified": False,
                "wal_folded": True, "storage": "packed", "own_bytes": 2, "shared_bytes": 7,
            },
        ],
        "unmanaged": [{"file": "x.duckdb", "why": "no manifest"}],
        "total_bytes": 19,
        "available_bytes": 1000,
        "warnings": [],
    }

    def test_list_backups(self) -> None:
        self.fake.acts(list={"stdout": json.dumps(self.LISTING, indent=2) + "\n"})
        listing = ducksafe.list_backups("config.yaml", **self.fake.kw)
        self.assertEqual([b.id for b in listing.backups], ["b2", "b1"])
        assert listing.latest is not None
        self.assertEqual(listing.latest.id, "b2")
        self.assertIsNone(listing.backups[1].rows)
        self.assertEqual(listing.unmanaged, (("x.duckdb", "no manifest"),))
        (call,) = self.fake.calls()
        self.assertEqual(call["argv"], ["--config", "config.yaml", "list", "--json"])

    def test_list_before_the_first_backup(self) -> None:
        empty = {"backup_dir": "/srv/sim/backups", "backups": [], "total_bytes": 0,
                 "unfinished_restores": [], "unmanaged": []}
        self.fake.acts(list={"stdout": json.dumps(empty)})
        listing = ducksafe.list_backups(**self.fake.kw)
        self.assertEqual((listing.backups, listing.latest, listing.available_bytes), ((), None, None))

    def test_list_failure(self) -> None:
        failed = {"errors": [error("config_not_found")], "exit_code": 66, "status": "error"}
        self.fake.acts(list={"stdout": json.dumps(failed, indent=2), "exit": 66})
        with self.assertRaises(ducksafe.NotFound) as cm:
            ducksafe.list_backups("missing.yaml", **self.fake.kw)
        self.assertEqual(cm.exception.code, "config_not_found")

    def test_restore(self) -> None:
        done = answer("post_run", "restored", 0, backup=BACKUP, restore=dict(RESTORE, unchanged=False))
        self.fake.acts(restore={"stdout": json.dumps(done, indent=2)})
        r = ducksafe.restore("b1", config="c.yaml", expect_sha256="ab" * 32, **self.fake.kw)
        assert r.restore is not None
        self.assertEqual(r.restore.quarantine, RESTORE["quarantine"])
        (call,) = self.fake.calls()
        self.assertEqual(
            call["argv"],
            ["--config", "c.yaml", "restore", "b1", "--expect-sha256", "ab" * 32, "--json"],
        )

    def test_restore_of_an_unknown_backup(self) -> None:
        missing = answer("post_run", "restore_failed", 66, errors=[error("backup_not_found")])
        self.fake.acts(restore={"stdout": json.dumps(missing, indent=2), "exit": 66})
        with self.assertRaises(ducksafe.NotFound) as cm:
            ducksafe.restore("nope", **self.fake.kw)
        self.assertEqual(cm.exception.code, "backup_not_found")

    def test_operator_commands_take_a_file(self) -> None:
        with self.assertRaises(TypeError):
            ducksafe.list_backups({"DB_PATH": "x"}, **self.fake.kw)  # type: ignore[arg-type]


class GuardedRun(FakeCase):
    def setUp(self) -> None:
        super().setUp()
        kept = answer("post_run", "kept", 0)
        restored = answer("post_run", "restored", 0, backup=BACKUP, restore=RESTORE)
        self.kept, self.restored = kept, restored
        self.fake.acts(pre_run={"stdout": line(PROCEED)}, post_run={"stdout": line(kept)})

    def posts(self) -> List[Dict[str, Any]]:
        return [r for r in self.fake.requests() if r["event"] == "post_run"]

    def test_a_body_that_returns_is_a_success(self) -> None:
        with ducksafe.guarded_run("c.yaml", on_failure="restore", **self.fake.kw) as run:
            self.assertEqual(run.backup_id, BACKUP["id"])
            with self.assertRaisesRegex(RuntimeError, "post_run has not answered yet"):
                run.post
        # Typed as the answer itself: no `assert run.post is not None` for mypy --strict.
        decision: str = run.post.decision
        self.assertEqual(decision, "kept")
        (post,) = self.posts()
        self.assertEqual(post["run"], {"outcome": "success", "exit_code": 0})
        self.assertNotIn("on_failure", post)
        self.assertEqual(post["backup_id"], BACKUP["id"])
        self.assertEqual(post["request_id"], "req-1")

    def test_post_run_finds_the_same_project_after_a_chdir(self) -> None:
        # Relative paths are resolved where the block started, and the backup's SHA-256 goes
        # with its id: an os.chdir in the block cannot make post_run restore another project.
        start = os.getcwd()
        self.addCleanup(os.chdir, start)
        elsewhere = tempfile.mkdtemp()
        with ducksafe.guarded_run("c.yaml", **self.fake.kw):
            os.chdir(elsewhere)
        pre, post = self.fake.requests()
        want = os.path.join(start, "c.yaml")
        self.assertEqual(pre["config"], {"path": want})
        self.assertEqual(post["config"], {"path": want})
        self.assertEqual(post["backup_sha256"], BACKUP["sha256"])
        (pre_call, post_call) = [c for c in self.fake.calls() if c["argv"][:1] == ["hook"]]
        self.assertEqual(pre_call.get("cwd"), post_call.get("cwd"))

    def test_a_guarded_run_inside_another_of_the_same_configuration_is_refused(self) -> None:
        with ducksafe.guarded_run("c.yaml", **self.fake.kw):
            with self.assertRaises(ducksafe.UsageError) as cm:
                with ducksafe.guarded_run("c.yaml", **self.fake.kw):
                    self.fail("the inner body ran")
            self.assertIn("already in progress in this process", str(cm.exception))
        # One pre_run and one post_run: the inner one never reached ducksafe.
        self.assertEqual([r["event"] for r in self.fake.requests()], ["pre_run", "post_run"])
        # Ended: the same configuration may be guarded again.
        with ducksafe.guarded_run("c.yaml", **self.fake.kw):
            pass

    def test_a_body_that_raises_is_a_failure_and_the_exception_goes_on(self) -> None:
        self.fake.acts(pre_run={"stdout": line(PROCEED)}, post_run={"stdout": line(self.restored)})
        with self.assertRaisesRegex(RuntimeError, "the simulation broke"):
            with ducksafe.guarded_run("c.yaml", on_failure="restore", **self.fake.kw) as run:
                raise RuntimeError("the simulation broke")
        self.assertTrue(run.restored)
        self.assertEqual(run.exit_code, 1)
        (post,) = self.posts()
        self.assertEqual(post["run"], {"outcome": "failure", "exit_code": 1})
        self.assertEqual(post["on_failure"], "restore")

    def test_a_failed_exit_status_set_by_the_caller(self) -> None:
        with ducksafe.guarded_run("c.yaml", **self.fake.kw) as run:
            run.exit_code = 3
        (post,) = self.posts()
        self.assertEqual(post["run"], {"outcome": "failure", "exit_code": 3})
        # No on_failure given: the configuration's RESTORE_ON_FAILURE decides.
        self.assertNotIn("on_failure", post)
        with ducksafe.guarded_run("c.yaml", on_failure="keep", **self.fake.kw) as run:
            run.fail()
        self.assertEqual(self.posts()[-1]["run"], {"outcome": "failure", "exit_code": 1})
        self.assertEqual(self.posts()[-1]["on_failure"], "keep")

    def test_sys_exit_follows_pythons_rules(self) -> None:
        for code, reported in [(None, 0), (0, 0), (4, 4), ("message", 1)]:
            with self.subTest(code=code):
                with self.assertRaises(SystemExit):
                    with ducksafe.guarded_run("c.yaml", **self.fake.kw):
                        sys.exit(code)
                self.assertEqual(self.posts()[-1]["run"]["exit_code"], reported)

    def test_exit_codes_are_checked_when_they_are_set(self) -> None:
        # At the assignment, with a message, rather than a request ducksafe refuses at the end.
        with ducksafe.guarded_run("c.yaml", **self.fake.kw) as run:
            for bad, kind in [(True, TypeError), (False, TypeError), ("3", TypeError),
                              (3.0, TypeError), (256, ValueError), (-128, ValueError)]:
                with self.subTest(bad=bad):
                    with self.assertRaises(kind) as cm:
                        run.exit_code = bad  # type: ignore[assignment]
                    self.assertIn("run.exit_code", str(cm.exception))
                    self.assertIsNone(run.exit_code)
            with self.assertRaisesRegex(TypeError, "run.fail"):
                run.fail(True)
            with self.assertRaisesRegex(ValueError, "other than 0"):
                run.fail(0)
            # A subprocess killed by SIGTERM has returncode -15: the shell's 143.
            run.exit_code = -signal.SIGTERM
            self.assertEqual(run.exit_code, 143)
        self.assertEqual(self.posts()[-1]["run"], {"outcome": "failure", "exit_code": 143})
        # post_run() itself refuses a bool, which ducksafe would refuse as an invalid request.
        with self.assertRaisesRegex(TypeError, "not `True`"):
            ducksafe.post_run("b1", exit_code=True, **self.fake.kw)
        self.assertEqual(len(self.posts()), 1, "the refused post_run never reached ducksafe")

    def test_sys_exit_0_after_a_failure_exits_with_the_failure(self) -> None:
        # run.fail(3) then sys.exit(0): reported as a failure with 3, and the process then ends
        # with 3, not 0, so that its exit status says what post_run was told.
        with self.assertRaises(SystemExit) as cm:
            with ducksafe.guarded_run("c.yaml", **self.fake.kw) as run:
                run.fail(3)
                sys.exit(0)
        self.assertEqual(self.posts()[-1]["run"], {"outcome": "failure", "exit_code": 3})
        self.assertEqual(cm.exception.code, 3)
        self.assertEqual(run.exit_code, 3)

    def guarded_rows(self, runs: List[Any], **kw: Any) -> Generator[int, None, None]:
        """A generator that yields rows from inside a guarded run, as a streaming job does."""
        with ducksafe.guarded_run("c.yaml", **self.fake.kw, **kw) as run:
            runs.append(run)
            for i in range(3):
                yield i

    def test_an_abandoned_block_is_a_failed_run_and_says_so(self) -> None:
        # The consumer stops after one row and closes the generator: the block gets
        # GeneratorExit, half its work undone. Counted as failed (restored when asked), but
        # never silently: an AbandonedRun warning names the backup and post_run's decision.
        self.fake.acts(pre_run={"stdout": line(PROCEED)}, post_run={"stdout": line(self.restored)})
        runs: List[Any] = []
        rows = self.guarded_rows(runs, on_failure="restore")
        self.assertEqual(next(rows), 0)
        with self.assertWarns(ducksafe.AbandonedRun) as cm:
            rows.close()
        self.assertIn(BACKUP["id"], str(cm.warning))
        self.assertIn("answered `restored`", str(cm.warning))
        self.assertIn('abandoned="success"', str(cm.warning))
        (run,) = runs
        self.assertTrue(run.abandoned)
        self.assertTrue(run.restored)
        (post,) = self.posts()
        self.assertEqual(post["run"], {"outcome": "failure", "exit_code": 1})
        self.assertEqual(post["on_failure"], "restore")

    def test_an_abandoned_block_may_count_as_a_success_when_asked(self) -> None:
        runs: List[Any] = []
        rows = self.guarded_rows(runs, on_failure="restore", abandoned="success")
        self.assertEqual(next(rows), 0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning: the caller said what it means
            rows.close()
        self.assertTrue(runs[0].abandoned)
        self.assertEqual(self.posts()[-1]["run"], {"outcome": "success", "exit_code": 0})
        # A failure the block had set before it was abandoned still counts.
        rows = self.guarded_rows(runs, abandoned="success")
        next(rows)
        runs[-1].fail(4)
        rows.close()
        self.assertEqual(self.posts()[-1]["run"], {"outcome": "failure", "exit_code": 4})
        with self.assertRaisesRegex(ValueError, "abandoned"):
            with ducksafe.guarded_run("c.yaml", abandoned="ignore", **self.fake.kw):
                pass

    def test_a_block_run_to_its_end_in_a_generator_is_not_abandoned(self) -> None:
        runs: List[Any] = []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            self.assertEqual(list(self.guarded_rows(runs)), [0, 1, 2])
        self.assertFalse(runs[0].abandoned)
        self.assertEqual(self.posts()[-1]["run"], {"outcome": "success", "exit_code": 0})

    def in_a_child(self, body: str) -> "subprocess.CompletedProcess[str]":
        """Runs ``body`` in a Python of its own (signals it sends itself end that process, not
        the test's), with ``ducksafe``, ``kw`` (the fake binary) and ``out`` (printed as JSON
        at the end) defined."""
        prelude = (
            "import json, os, signal, sys\n"
            "import ducksafe\n"
            "kw = {'binary': os.environ['TEST_FAKE_BINARY']}\n"
            "out = {}\n"
        )
        env = dict(self.fake.env, TEST_FAKE_BINARY=str(self.fake.binary))
        if os.environ.get("DUCKSAFE_TEST_INSTALLED") != "1":
            env["PYTHONPATH"] = str(REPO / "hooks" / "python")
        return subprocess.run(
            [sys.executable, "-c", prelude + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"],
            env=env,
            cwd=self.fake.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )

    def test_the_applications_own_signal_handler_still_runs(self) -> None:
        # An orchestrator's own SIGTERM handler (a graceful stop) is not replaced while the
        # block runs: it runs, the block goes on as the handler decided, and the handler is
        # the one in place afterwards.
        p = self.in_a_child(
            """
            calls = []
            def mine(signum, frame):
                calls.append(signum)
            signal.signal(signal.SIGTERM, mine)
            with ducksafe.guarded_run("c.yaml", **kw) as run:
                os.kill(os.getpid(), signal.SIGTERM)
                out["in_block"] = list(calls)
                out["went_on"] = True
            out["after_is_mine"] = signal.getsignal(signal.SIGTERM) is mine
            """
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(
            json.loads(p.stdout),
            {"in_block": [int(signal.SIGTERM)], "went_on": True, "after_is_mine": True},
        )
        self.assertEqual(self.posts()[-1]["run"], {"outcome": "success", "exit_code": 0})

    def test_an_ignored_signal_stays_ignored(self) -> None:
        # Under nohup (SIGHUP ignored) a hangup must not end the block.
        p = self.in_a_child(
            """
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            with ducksafe.guarded_run("c.yaml", **kw) as run:
                os.kill(os.getpid(), signal.SIGHUP)
                out["went_on"] = True
            out["after_ignored"] = signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            """
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout), {"went_on": True, "after_ignored": True})

    def test_a_handler_that_raises_terminated_ends_as_without_one(self) -> None:
        # The application's handler runs first (its clean-up), then raises Terminated: the run
        # is failed with 128 + N, post_run restores, and the process ends by the signal.
        self.fake.acts(pre_run={"stdout": line(PROCEED)}, post_run={"stdout": line(self.restored)})
        p = self.in_a_child(
            """
            def mine(signum, frame):
                print("mine ran", flush=True)
                raise ducksafe.Terminated(signum)
            signal.signal(signal.SIGTERM, mine)
            with ducksafe.guarded_run("c.yaml", on_failure="restore", **kw) as run:
                os.kill(os.getpid(), signal.SIGTERM)
                out["went_on"] = True
            """
        )
        self.assertEqual(p.returncode, -signal.SIGTERM, p.stderr)
        self.assertEqual(p.stdout, "mine ran\n")
        self.assertEqual(self.posts()[-1]["run"], {"outcome": "failure", "exit_code": 143})

    def test_without_a_handler_sigterm_ends_the_block_and_the_process(self) -> None:
        self.fake.acts(pre_run={"stdout": line(PROCEED)}, post_run={"stdout": line(self.restored)})
        p = self.in_a_child(
            """
            with ducksafe.guarded_run("c.yaml", on_failure="restore", **kw) as run:
                os.kill(os.getpid(), signal.SIGTERM)
                out["went_on"] = True
            """
        )
        self.assertEqual(p.returncode, -signal.SIGTERM, p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertEqual(self.posts()[-1]["run"], {"outcome": "failure", "exit_code": 143})

    def test_a_handler_installed_in_the_block_is_kept(self) -> None:
        p = self.in_a_child(
            """
            def mine(signum, frame):
                pass
            with ducksafe.guarded_run("c.yaml", **kw) as run:
                signal.signal(signal.SIGTERM, mine)
            out["after_is_mine"] = signal.getsignal(signal.SIGTERM) is mine
            out["hup_back_to_default"] = signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
            """
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout), {"after_is_mine": True, "hup_back_to_default": True})

    def test_no_proceed_no_body(self) -> None:
        self.fake.acts(pre_run={"stdout": line(LOCKED), "exit": 75})
        ran = []
        with self.assertRaises(ducksafe.DucksafeBusy):
            with ducksafe.guarded_run("c.yaml", **self.fake.kw):
                ran.append(True)
        self.assertEqual(ran, [])
        self.assertEqual(self.posts(), [])

    def test_a_failed_restore_is_raised_chained_to_the_bodys_exception(self) -> None:
        failed = answer("post_run", "restore_failed", 74, errors=[error("restore_failed")])
        self.fake.acts(pre_run={"stdout": line(PROCEED)}, post_run={"stdout": line(failed), "exit": 74})
        with self.assertRaises(ducksafe.RestoreFailed) as cm:
            with ducksafe.guarded_run("c.yaml", on_failure="restore", **self.fake.kw):
                raise RuntimeError("the simulation broke")
        self.assertIsInstance(cm.exception.__context__, RuntimeError)

    def test_the_legacy_names(self) -> None:
        self.assertIs(ducksafe.protected_run, ducksafe.guarded_run)
        self.assertIs(ducksafe.ProtectedRun, ducksafe.GuardedRun)


def real_binary() -> Optional[str]:
    """A built ducksafe: the installed one, else $DUCKSAFE_BIN or $DUCKSAFE (the Rust
    integration tests set $DUCKSAFE to the binary they built)."""
    try:
        return ducksafe.find_binary()
    except ducksafe.BinaryNotFound:
        return None


class RealBinary(unittest.TestCase):
    """Against the real binary, at a moment its failpoints fix (src/failpoint.rs), in a
    database made by `ducksafe init --demo`: no race, whatever the load."""

    def setUp(self) -> None:
        binary = real_binary()
        if binary is None:
            self.skipTest("no ducksafe binary: set DUCKSAFE_BIN to a built one")
        self.binary = binary
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        subprocess.run(
            [binary, "init", "--demo", "--dir", str(self.dir), "-q"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.config = str(self.dir / "config.yaml")

    def test_a_pre_run_killed_after_it_recorded_the_run_keeps_no_one_waiting(self) -> None:
        # pre_run stops at `rotation.done` (the run recorded in the lease, naming this
        # process) until it is killed; the timeout counts from that moment.
        go = self.dir / "go"
        self.addCleanup(go.touch)  # let a failed test's ducksafe go
        env = dict(os.environ, DUCKSAFE_FAILPOINT=f"rotation.done:wait={go}")
        real_run = subprocess.run

        def timed_from_the_failpoint(
            argv: List[str], *, input: bytes, timeout: Optional[float], **kw: Any
        ) -> "subprocess.CompletedProcess[bytes]":
            kw.pop("check", None)
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, **kw)
            assert p.stdin is not None
            p.stdin.write(input)
            p.stdin.close()
            p.stdin = None
            deadline = time.monotonic() + 300  # only stops a broken run from hanging the test
            while not Path(f"{go}.reached").exists() and p.poll() is None:
                self.assertLess(time.monotonic(), deadline, "ducksafe never reached the failpoint")
                time.sleep(0.005)
            try:
                out, _ = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise
            return subprocess.CompletedProcess(argv, p.returncode, out, None)

        with mock.patch.object(subprocess, "run", timed_from_the_failpoint):
            with self.assertRaises(ducksafe.HookTimeout) as cm:
                ducksafe.pre_run(self.config, binary=self.binary, env=env, timeout=0.5)
        self.assertTrue(Path(f"{go}.reached").exists(), "killed before the run was recorded")
        go.touch()
        # Another runner (another process: a shell between) is not kept waiting.
        other = real_run(
            ["sh", "-c", '"$0" --config "$1" -q pre-run; exit $?', self.binary, self.config],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        self.assertEqual(other.returncode, 0, other.stdout)
        self.assertEqual(json.loads(other.stdout)["decision"], "proceed")
        self.assertIn("was ended (post_run answered `kept`", str(cm.exception))


class BinaryLookup(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.on_path = self.dir / "path" / "ducksafe"
        self.on_path.parent.mkdir()
        self.on_path.write_text("#!/bin/sh\n")
        self.on_path.chmod(0o755)

    def executable(self, name: str) -> str:
        p = self.dir / name
        p.write_text("#!/bin/sh\n")
        p.chmod(0o755)
        return str(p)

    def lookup(self, env: Dict[str, str], installed: Optional[str]) -> str:
        with mock.patch.dict(os.environ, env, clear=True), mock.patch.object(
            _binary, "installed_binary", return_value=installed
        ):
            return ducksafe.find_binary()

    def test_order(self) -> None:
        path = {"PATH": str(self.on_path.parent)}
        b, d = self.executable("b"), self.executable("d")
        self.assertEqual(self.lookup(dict(path, DUCKSAFE_BIN=b, DUCKSAFE=d), "/venv/bin/ducksafe"), "/venv/bin/ducksafe")
        self.assertEqual(self.lookup(dict(path, DUCKSAFE_BIN=b, DUCKSAFE=d), None), b)
        self.assertEqual(self.lookup(dict(path, DUCKSAFE=d), None), d)
        self.assertEqual(self.lookup(path, None), str(self.on_path))
        self.assertEqual(ducksafe.find_binary("/explicit"), "/explicit")

    def test_a_wrong_ducksafe_bin_is_binary_not_found(self) -> None:
        # A $DUCKSAFE_BIN that names nothing runnable is said as such, with the variable, and
        # is not skipped for PATH: the caller asked for that binary.
        not_executable = self.dir / "not-executable"
        not_executable.write_text("#!/bin/sh\n")
        path = {"PATH": str(self.on_path.parent)}
        for named, says in [
            (str(self.dir / "missing"), "does not exist"),
            (str(not_executable), "is not executable"),
            (str(self.dir), "is a directory"),
            ("no-such-ducksafe", "no `no-such-ducksafe` on PATH"),
        ]:
            for var in ("DUCKSAFE_BIN", "DUCKSAFE"):
                with self.subTest(named=named, var=var):
                    with self.assertRaises(ducksafe.BinaryNotFound) as cm:
                        self.lookup(dict(path, **{var: named}), None)
                    self.assertEqual(cm.exception.exit_code, 127)
                    self.assertIn(f"${var}", str(cm.exception))
                    self.assertIn(says, str(cm.exception))
        # A bare name on PATH is found there.
        self.assertEqual(self.lookup(dict(path, DUCKSAFE_BIN="ducksafe"), None), str(self.on_path))

    def test_none_at_all(self) -> None:
        with self.assertRaises(ducksafe.BinaryNotFound) as cm:
            self.lookup({"PATH": str(self.dir)}, None)
        self.assertEqual(cm.exception.exit_code, 127)
        self.assertIsInstance(cm.exception, ducksafe.HookUnavailable)

    def test_installed_is_what_the_distribution_installed(self) -> None:
        # Where the wheel is installed, the binary is the one beside this interpreter's
        # scripts; from a checkout there is none (unless a wheel is installed too).
        found = ducksafe.installed_binary()
        if os.environ.get("DUCKSAFE_TEST_INSTALLED") == "1":
            self.assertIsNotNone(found)
            assert found is not None
            self.assertEqual(Path(found).parent, Path(sys.executable).parent)


class LegacyModule(unittest.TestCase):
    def test_ducksafe_hook_is_the_package(self) -> None:
        sys.path.insert(0, str(REPO / "hooks"))
        try:
            import ducksafe_hook
        finally:
            sys.path.remove(str(REPO / "hooks"))
        for name in ducksafe_hook.__all__:
            self.assertIs(getattr(ducksafe_hook, name), getattr(ducksafe, name), name)
        self.assertIs(ducksafe_hook.protected_run, ducksafe.guarded_run)


if __name__ == "__main__":
    unittest.main()
