"""The multi-year run: back up, simulate each year in turn, roll back when a year fails."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import ducksafe

from .backup_manager import BackupManager

#: The per-year workload: the examples' stand-in simulation (the real orchestrator runs dbt).
WORKLOAD = Path(__file__).resolve().parents[2] / "workload" / "simulate.py"


@dataclass
class PipelineResult:
    exit_code: int
    years_done: List[int] = field(default_factory=list)
    failed_year: Optional[int] = None
    decision: Optional[str] = None  # post_run's: kept, restored


class PipelineOrchestrator:
    def __init__(
        self,
        backups: BackupManager,
        *,
        fail_in_year: Optional[int] = None,
        python: str = sys.executable,
    ) -> None:
        self.backups = backups
        self.fail_in_year = fail_in_year
        self.python = python

    def run_multi_year_simulation(
        self, years: Sequence[int], request_id: Optional[str] = None
    ) -> PipelineResult:
        # 1. No verified backup, no run. DucksafeBusy / DucksafeError propagate to the caller.
        backup_path = self.backups.create_backup(request_id)
        pre = self.backups.pre
        assert pre is not None and pre.backup is not None
        print(
            f"orchestrator: backup {pre.backup_id} verified "
            f"({', '.join(pre.backup.verification)}): {backup_path}"
        )

        # 2. The years, in order; the first failure stops the run.
        result = PipelineResult(exit_code=0)
        for year in years:
            code = self._run_year(year)
            if code != 0:
                print(f"orchestrator: year {year} failed with exit code {code}")
                result.exit_code, result.failed_year = code, year
                break
            result.years_done.append(year)

        # 3. post_run: kept after success; after a failure, restored when configured.
        try:
            post = self.backups.finish(result.exit_code)
        except ducksafe.DucksafeError as e:
            print(f"orchestrator: ROLLBACK FAILED ({', '.join(e.codes)}): {e}; see docs/runbook.md")
            result.decision = e.decision
            return result
        result.decision = post.decision
        if post.decision == "restored":
            assert post.restore is not None
            print(
                f"orchestrator: rolled back to {pre.backup_id}; the failed run's files are in "
                f"{post.restore.quarantine}"
            )
        elif result.exit_code != 0:
            print(
                f"orchestrator: the failed run's changes were kept ({post.decision}); to roll "
                f"back: {' '.join(pre.rollback.command) if pre.rollback else 'ducksafe restore'}"
            )
        else:
            print(
                f"orchestrator: simulation complete for {len(result.years_done)} year(s); "
                f"backup {pre.backup_id} kept"
            )
        return result

    def _run_year(self, year: int) -> int:
        argv = [self.python, str(WORKLOAD), "--db", str(self.backups.db_path), "--years", str(year)]
        if year == self.fail_in_year:
            argv += ["--fail-in-year", str(year)]
        print(f"orchestrator: year {year}: starting", flush=True)
        return subprocess.run(argv, check=False).returncode
