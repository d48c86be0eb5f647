#!/bin/sh
# `ducksafe diff` on a copy of the 1 GiB benchmark database, against a full scan of both sides
# by DuckDB itself (the floor), in one run: wall time and peak RSS by /usr/bin/time.
# Usage: docs/diff-bench.sh [WORKDIR]   (needs the bench database: `cargo run --example bench`)
# Writes into WORKDIR (default ~/.cache/ducksafe-bench-diff): a copy of the database (1 GiB),
# two backups. Figures go to docs/performance.md, "What a run changed".
set -eu
T=${CARGO_TARGET_DIR:-target}
B=$T/debug/ducksafe
SRC=${BENCH_DB:-$T/bench/1GB/simulation.duckdb}
PY=${DUCKSAFE_TOOLS:-$HOME/.cache/ducksafe-tools}/bin/python
W=${1:-$HOME/.cache/ducksafe-bench-diff}
REPS=${REPS:-3}
B=$(realpath "$B")
mkdir -p "$W" && cd "$W"
rm -rf backups simulation.duckdb simulation.duckdb.wal
cp "$SRC" simulation.duckdb
printf 'DB_PATH: simulation.duckdb\nLOG_LEVEL: WARNING\nBACKUP_DIR: backups\nBACKUP_MIN_FREE_BYTES: 0\nBACKUP_KEEP_LAST: 3\n' > config.yaml
"$B" --config config.yaml -q backup >/dev/null
# A run: events inserted, salaries updated, one table rebuilt.
"$PY" - <<'PY'
import duckdb
c = duckdb.connect("simulation.duckdb")
c.execute("INSERT INTO fct_yearly_events SELECT * REPLACE ('EVT-NEW-' || event_id AS event_id) FROM fct_yearly_events LIMIT 1000")
c.execute("UPDATE employees SET current_compensation = current_compensation * 1.03 WHERE job_level = 3")
c.execute("CREATE OR REPLACE TABLE fct_compensation_history AS SELECT * FROM fct_compensation_history WHERE plan_year > 2021")
c.execute("CHECKPOINT")
PY
# The backup as a plain file too, so that both sides must be scanned.
BACKUP=$(realpath backups/latest.duckdb)
cp "$BACKUP" before.duckdb
ls -l simulation.duckdb before.duckdb | awk '{print $5, $NF}'
t() { /usr/bin/time -f "%e s %M KB  $1" sh -c "$2" >/dev/null 2>>times.txt || true; tail -1 times.txt; }
: > times.txt
for i in $(seq "$REPS"); do
  echo "--- rep $i"
  t "floor: DuckDB scans every column of both files" "'$PY' -c \"
import duckdb
for f in ['before.duckdb', 'simulation.duckdb']:
    c = duckdb.connect(f, read_only=True)
    for (t,) in c.execute('SELECT table_name FROM duckdb_tables()').fetchall():
        c.execute(f'SELECT count(*), sum(hash(*COLUMNS(*)))::HUGEINT, bit_xor(hash(*COLUMNS(*))) FROM \\\"{t}\\\"').fetchall()
\""
  t "cat both files (page cache)" "cat before.duckdb simulation.duckdb"
  t "ducksafe diff latest current (backup's fingerprints from its manifest)" "'$B' --config config.yaml -q diff latest current"
  t "ducksafe diff before.duckdb current (both sides scanned)" "'$B' --config config.yaml -q diff before.duckdb current"
  t "ducksafe diff --rows employees (no key: EXCEPT ALL; 1 row in 5 changed)" "'$B' --config config.yaml -q diff --rows employees --limit 20 before.duckdb current"
  t "ducksafe diff --rows fct_yearly_events (no key; 1,000 rows added)" "'$B' --config config.yaml -q diff --rows fct_yearly_events --limit 20 before.duckdb current"
  t "post_run summary (REPORT_CHANGES: true)" "'$B' --config config.yaml -q post-run --outcome success --set REPORT_CHANGES=true"
  t "post_run without it (REPORT_CHANGES: false)" "'$B' --config config.yaml -q post-run --outcome success --set REPORT_CHANGES=false"
done
