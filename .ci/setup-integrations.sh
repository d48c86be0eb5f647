#!/usr/bin/env bash
# Installs the real programs that tests/it/integrations/ drives, pinned:
#   - dbt-core, dbt-duckdb, duckdb (= the DuckDB ducksafe bundles) and rust-just (the `just`
#     binary) into a virtual environment at ${DUCKSAFE_TOOLS:-$HOME/.cache/ducksafe-tools},
#     from .ci/integrations-requirements.txt (every package pinned);
#   - maturin and mypy (the Python package's build and type check) into a second one at
#     ${DUCKSAFE_PYTOOLS:-$HOME/.cache/ducksafe-pytools}, from .ci/python-requirements.txt;
#   - make from Debian, only when it is missing.
#
#   bash .ci/setup-integrations.sh
#
# Idempotent: when an environment already matches its requirements file and this Python, it
# only prints the versions (well under a second). The tests look in $DUCKSAFE_TOOLS/bin first,
# then PATH; outside CI they skip, with a message, what they cannot find.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="${DUCKSAFE_TOOLS:-$HOME/.cache/ducksafe-tools}"
reqs=.ci/integrations-requirements.txt
stamp="$tools/.ducksafe-requirements"
say() { echo "setup-integrations: $*"; }

if ! command -v make >/dev/null 2>&1; then
  say "installing make from Debian"
  sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq make >/dev/null
fi

want="$(python3 -c 'import sys; print(sys.version.split()[0])') $(sha256sum "$reqs" | cut -d' ' -f1)"
if [ -x "$tools/bin/python" ] && [ -x "$tools/bin/dbt" ] && [ -x "$tools/bin/just" ] \
  && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "up to date in $tools"
else
  say "installing into $tools (pinned in $reqs)"
  mkdir -p "$(dirname "$tools")"
  python3 -m venv --clear "$tools"
  "$tools/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -r "$reqs"
  echo "$want" >"$stamp"
fi

"$tools/bin/python" - <<'EOF'
import importlib.metadata as m
print("setup-integrations: " + ", ".join(f"{p} {m.version(p)}" for p in ("dbt-core", "dbt-duckdb", "duckdb", "rust-just", "prometheus-client")))
EOF
say "$("$tools/bin/just" --version), $(make --version | head -n 1)"

# Installed is not working: a venv whose `import duckdb` (or dbt's) fails stops CI here, with
# Python's own error, rather than as integration tests that cannot find a working tool.
"$tools/bin/python" -c 'import duckdb, yaml, dbt.cli.main, prometheus_client.parser; duckdb.connect().execute("SELECT 1").fetchone()'
say "python imports duckdb, yaml, dbt and prometheus_client"

# The Python package's own tools, in an environment of their own (see the requirements file).
pytools="${DUCKSAFE_PYTOOLS:-$HOME/.cache/ducksafe-pytools}"
pyreqs=.ci/python-requirements.txt
pystamp="$pytools/.ducksafe-requirements"
pywant="$(python3 -c 'import sys; print(sys.version.split()[0])') $(sha256sum "$pyreqs" | cut -d' ' -f1)"
if [ -x "$pytools/bin/maturin" ] && [ -x "$pytools/bin/mypy" ] && [ -f "$pystamp" ] \
  && [ "$(cat "$pystamp")" = "$pywant" ]; then
  say "up to date in $pytools"
else
  say "installing into $pytools (pinned in $pyreqs)"
  mkdir -p "$(dirname "$pytools")"
  python3 -m venv --clear "$pytools"
  "$pytools/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -r "$pyreqs"
  echo "$pywant" >"$pystamp"
fi
say "$("$pytools/bin/maturin" --version), $("$pytools/bin/mypy" --version)"

# The S3-compatible servers of tests/it/remote/, in an environment of their own.
bash .ci/setup-s3.sh
