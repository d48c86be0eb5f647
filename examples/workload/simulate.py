#!/usr/bin/env python3
"""A stand-in for the workforce simulation: the workload that ducksafe protects in the examples.

    python3 examples/workload/simulate.py --db simulation.duckdb --years 2025 2026
    python3 examples/workload/simulate.py --db simulation.duckdb --years 2025 2026 \
        --fail-in-year 2026

It needs the `duckdb` Python package (the examples pin `duckdb==2.0.0`, the engine ducksafe
bundles) and a database shaped like `ducksafe init --demo` makes: `employees` and
`fct_yearly_events`.

Each simulation year is one transaction: a 3% raise for every active employee, recorded as
`raise` events. With `--fail-in-year YEAR` the run commits that year's events and then dies
without closing the database (`os._exit`, as a killed or out-of-memory run does): the committed
changes stay in `<db>.wal`, which is exactly the state a ducksafe restore must clean up.

Exit codes: 0 done, 1 the injected failure, 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys

RAISE_PCT = 0.03


def simulate_year(con, year: int) -> int:  # type: ignore[no-untyped-def]
    """Writes one year's raise events and applies them. Returns the number of events."""
    (events,) = con.execute(
        """
        INSERT INTO fct_yearly_events
        SELECT 'EVT-' || ?::VARCHAR || '-' || employee_id, employee_id, 'raise', ?,
               make_date(?, 1, 1), round(current_compensation * (1 + ?), 2)::DECIMAL(12, 2),
               current_compensation, job_level, ?, 'scenario_baseline'
        FROM employees WHERE employment_status = 'active'
        """,
        [year, year, year, RAISE_PCT, RAISE_PCT],
    ).fetchone()
    con.execute(
        "UPDATE employees SET current_compensation = round(current_compensation * (1 + ?), 2) "
        "WHERE employment_status = 'active'",
        [RAISE_PCT],
    )
    return int(events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--db", default="simulation.duckdb", help="the database to write")
    parser.add_argument("--years", type=int, nargs="+", required=True, help="simulation years")
    parser.add_argument(
        "--fail-in-year",
        type=int,
        help="commit that year's events, then die without closing the database",
    )
    args = parser.parse_args(argv)

    try:
        import duckdb
    except ImportError:
        print(
            "simulate: error: the `duckdb` Python package is missing\n"
            "  hint: run `bash .ci/setup-integrations.sh` and use its Python, or `pip "
            "install duckdb==2.0.0`",
            file=sys.stderr,
        )
        return 2
    if not os.path.exists(args.db):
        print(f"simulate: error: `{args.db}` does not exist", file=sys.stderr)
        return 2

    con = duckdb.connect(args.db)
    for year in args.years:
        con.execute("BEGIN TRANSACTION")
        events = simulate_year(con, year)
        con.execute("COMMIT")
        print(f"simulate: year {year}: {events} raise events committed", flush=True)
        if year == args.fail_in_year:
            print(f"simulate: year {year}: dying without closing the database", flush=True)
            sys.stderr.flush()
            os._exit(1)
    con.close()
    print(f"simulate: done, {len(args.years)} year(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
