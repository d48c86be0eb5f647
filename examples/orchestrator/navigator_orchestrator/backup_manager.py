"""The seed's `navigator_orchestrator.backup_manager.BackupManager`, with ducksafe doing the work.

The seed sketched a BackupManager that copies `simulation.duckdb` itself. ducksafe does that
consistently (no writer can start meanwhile, data still in the WAL included), verifies the copy
and rotates old ones; this class keeps the seed's `create_backup() -> Path` and adds the other
half: `finish(exit_code)` reports the run's outcome, which restores the backup after a failed
run when asked to.

The calls go through the `ducksafe` package (the wheel built from a checkout,
`pip install dist/ducksafe-*.whl`, which also installs the binary it runs: README.md, Install);
from a checkout of ducksafe, `PYTHONPATH=hooks/python` gives the same package.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import ducksafe

__all__ = ["BackupManager"]


class BackupManager:
    def __init__(
        self,
        config_path: str = "config.yaml",
        *,
        on_failure: Optional[str] = None,
        retries: int = 0,
        retry_delay: float = 5.0,
        state_dir: Optional[Path] = None,
    ) -> None:
        self.config_path = config_path
        self.on_failure = on_failure
        self.retries = retries
        self.retry_delay = retry_delay
        self.state_dir = state_dir
        self.pre: Optional[ducksafe.Response] = None
        self.post: Optional[ducksafe.Response] = None

    def create_backup(self, request_id: Optional[str] = None) -> Path:
        """Backs up and verifies the database; returns the backup's path.

        Raises ducksafe.DucksafeBusy when the database is still held by a writer after
        `retries` more attempts, ducksafe.DucksafeError for anything else: do not run.
        """
        self._forget("pre_run", "post_run")
        attempt = 0
        while True:
            try:
                self.pre = ducksafe.pre_run(self.config_path, request_id=request_id)
                break
            except ducksafe.DucksafeBusy as e:
                self._save("pre_run", e.response)
                if attempt >= self.retries:
                    raise
                attempt += 1
                print(
                    f"orchestrator: database busy ({', '.join(e.codes)}); retry "
                    f"{attempt}/{self.retries} in {self.retry_delay:g}s"
                )
                time.sleep(self.retry_delay)
            except ducksafe.DucksafeError as e:
                self._save("pre_run", e.response)
                raise
        self._save("pre_run", self.pre)
        assert self.pre.backup is not None
        return Path(self.pre.backup.path)

    @property
    def db_path(self) -> Path:
        """The database ducksafe protects, as it resolved it (absolute)."""
        assert self.pre is not None, "create_backup() first"
        return Path(self.pre.paths["db_path"])

    def finish(self, exit_code: int) -> ducksafe.Response:
        """Reports the run's exit code; on failure the backup is restored when configured."""
        assert self.pre is not None, "create_backup() first"
        try:
            self.post = ducksafe.post_run(
                self.pre.backup_id,
                exit_code=exit_code,
                on_failure=self.on_failure,
                config=self.config_path,
                request_id=self.pre.request_id,
            )
        except ducksafe.DucksafeError as e:
            self._save("post_run", e.response)
            raise
        self._save("post_run", self.post)
        return self.post

    def _save(self, name: str, response: Optional[ducksafe.Response]) -> None:
        if self.state_dir is None or response is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"{name}.json").write_text(json.dumps(response.raw) + "\n")

    def _forget(self, *names: str) -> None:
        if self.state_dir is not None:
            for name in names:
                (self.state_dir / f"{name}.json").unlink(missing_ok=True)
