#!/usr/bin/env python3
"""Entry point of the orchestrator example, runnable from a fresh checkout:

    cd /srv/sim          # config.yaml and simulation.duckdb (`ducksafe init --demo` makes both)
    python3 /path/to/ducksafe/examples/orchestrator/run_simulation.py --years 2025 2026
    python3 .../run_simulation.py --years 2025 2026 --fail-in-year 2026 --on-failure restore

The Python that runs it needs the `ducksafe` package (the wheel built from a checkout,
`pip install dist/ducksafe-*.whl`, which installs the binary with it: README.md, Install; from a
checkout of ducksafe, `PYTHONPATH=/path/to/ducksafe/hooks/python` with
the binary on PATH or named by $DUCKSAFE_BIN) and the `duckdb` package (for the workload). Exit codes: 0 done; a failed year's own exit code (after post_run);
ducksafe's exit code when it refused the run (75: busy, retry later).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from navigator_orchestrator.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
