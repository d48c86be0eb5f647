"""python -m navigator_orchestrator --config config.yaml --years 2025 2026 [--on-failure restore]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import ducksafe

from .backup_manager import BackupManager
from .pipeline import PipelineOrchestrator


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="navigator_orchestrator", description="multi-year simulation protected by ducksafe"
    )
    p.add_argument(
        "--config",
        default="config.yaml",
        help="ducksafe configuration (DB_PATH, RESTORE_ON_FAILURE…)",
    )
    p.add_argument("--years", type=int, nargs="+", required=True)
    p.add_argument("--on-failure", choices=["restore", "keep"], help="override RESTORE_ON_FAILURE")
    p.add_argument(
        "--retries", type=int, default=0, help="retries while the database is busy (exit 75)"
    )
    p.add_argument("--retry-delay", type=float, default=5.0, help="seconds between retries")
    p.add_argument("--state-dir", type=Path, help="write pre_run.json and post_run.json here")
    p.add_argument("--request-id", help="echoed by ducksafe and stored in the backup's manifest")
    p.add_argument("--fail-in-year", type=int, help="(demo) make that year die after committing")
    a = p.parse_args(argv)

    backups = BackupManager(
        a.config,
        on_failure=a.on_failure,
        retries=a.retries,
        retry_delay=a.retry_delay,
        state_dir=a.state_dir,
    )
    orchestrator = PipelineOrchestrator(backups, fail_in_year=a.fail_in_year)
    try:
        result = orchestrator.run_multi_year_simulation(a.years, a.request_id)
    except ducksafe.DucksafeBusy as e:
        print(
            f"orchestrator: not started, the database is busy ({', '.join(e.codes)}); retry later",
            file=sys.stderr,
        )
        return e.exit_code
    except ducksafe.DucksafeError as e:
        print(f"orchestrator: not started: {e}", file=sys.stderr)
        return e.exit_code
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
