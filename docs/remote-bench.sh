#!/bin/sh
# Off-machine copies (issue 13): `ducksafe push`, `restore --remote` and `verify --remote
# --read-data` against SeaweedFS on loopback (credentials enforced, as the tests start it), beside
# boto3's plain `upload_file` / `download_file` of the same backup file, in one run, interleaved.
# Wall time and max RSS of every run by /usr/bin/time; a markdown table of medians at the end.
#
# Usage: BENCH_DB=path/to/simulation.duckdb [REPS=3] [DUCKSAFE_BIN=…] sh docs/remote-bench.sh [WORKDIR]
# Needs the S3 tools of `bash .ci/setup-integrations.sh` ($DUCKSAFE_S3TOOLS, default
# ~/.cache/ducksafe-s3tools: `weed`, and `python` with boto3). WORKDIR (default
# ~/.cache/ducksafe-bench-remote) gets a copy of the database, its backup, the server's data (up
# to 4 × REPS copies of the database while it runs: SeaweedFS reclaims deleted objects only when it
# vacuums; removed at the end) and times.tsv (the raw samples).
# Figures go to docs/performance.md, "Off-machine copies (issue 13)".
set -eu
T=${CARGO_TARGET_DIR:-target}
B=${DUCKSAFE_BIN:-$T/debug/ducksafe}
SRC=${BENCH_DB:-$T/bench/1GB/simulation.duckdb}
TOOLS=${DUCKSAFE_S3TOOLS:-$HOME/.cache/ducksafe-s3tools}
PY=$TOOLS/bin/python
WEED=$TOOLS/bin/weed
W=${1:-$HOME/.cache/ducksafe-bench-remote}
REPS=${REPS:-3}
B=$(realpath "$B")
SRC=$(realpath "$SRC")
BUCKET=bench
export AWS_ACCESS_KEY_ID=AKIDDUCKSAFEBENCH
export AWS_SECRET_ACCESS_KEY=bench-s3cr3t-ducksafe-only
export AWS_EC2_METADATA_DISABLED=true

mkdir -p "$W" && cd "$W"
W=$(pwd)
rm -rf p weed fresh dl.duckdb times.tsv
mkdir -p p weed/data

# 1. SeaweedFS: `weed mini` on free loopback ports, an identities file, the bucket.
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
  "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > weed/s3.json
S3PORT=$(free_port)
ENDPOINT=http://127.0.0.1:$S3PORT
set -- -dir="$W/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$S3PORT" \
  -s3.config="$W/weed/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 -bucket=$BUCKET
for f in master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc \
         s3.port.grpc admin.port admin.port.grpc webdav.port; do
  set -- "$@" "-$f=$(free_port)"
done
"$WEED" mini "$@" > weed/weed.log 2>&1 &
WEED_PID=$!
# 7. The server dies with the script, whatever happens, and its data goes with it.
trap 'kill "$WEED_PID" 2>/dev/null || true; wait "$WEED_PID" 2>/dev/null || true; rm -rf "$W/weed/data"' EXIT
trap 'exit 130' INT TERM HUP

# boto3 with the same credentials and endpoint: `boto.py up FILE KEY`, `down KEY FILE`,
# `delete PREFIX`, `head`. Transfers use boto3's defaults (TransferConfig: 8 MiB parts, 10 threads).
cat > boto.py <<PY
import sys, time, boto3
s3 = boto3.client('s3', endpoint_url='$ENDPOINT', region_name='us-east-1')
op = sys.argv[1]
t = time.monotonic()
if op == 'up':
    s3.upload_file(sys.argv[2], '$BUCKET', sys.argv[3])
elif op == 'down':
    s3.download_file('$BUCKET', sys.argv[2], sys.argv[3])
elif op == 'head':
    s3.head_bucket(Bucket='$BUCKET')
elif op == 'delete':
    keys = []
    for page in s3.get_paginator('list_objects_v2').paginate(Bucket='$BUCKET', Prefix=sys.argv[2] + '/'):
        keys += [{'Key': o['Key']} for o in page.get('Contents', [])]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket='$BUCKET', Delete={'Objects': keys[i:i + 1000]})
if op in ('up', 'down'):
    print(f'{time.monotonic() - t:.2f}', file=sys.stderr)
PY
n=0
until "$PY" boto.py head 2>/dev/null; do
  n=$((n + 1)); [ "$n" -lt 180 ] || { echo "SeaweedFS did not serve the bucket"; tail weed/weed.log; exit 1; }
  sleep 0.5
done
echo "SeaweedFS $("$WEED" version 2>/dev/null | head -1) on $ENDPOINT"

# 2. The project; 3. its local backup at VERIFY_LEVEL quick.
cp "$SRC" p/simulation.duckdb
conf() {
  printf 'DB_PATH: simulation.duckdb\nBACKUP_DIR: backups\nBACKUP_MIN_FREE_BYTES: 0\nLOG_LEVEL: WARNING\nVERIFY_LEVEL: quick\nREMOTE_URL: s3://%s/%s\nREMOTE_ENDPOINT: %s\n' \
    "$BUCKET" "$1" "$ENDPOINT"
}
conf unused > p/config.yaml
"$B" --config p/config.yaml -q backup >/dev/null
BACKUP=$(realpath p/backups/latest.duckdb 2>/dev/null || ls -t p/backups/*.duckdb | head -1)
echo "backup: $BACKUP ($(stat -c %s "$BACKUP") bytes)"

# 5. One timed run: label, rep, then the command; a failure is recorded, not fatal.
t() {
  label=$1 rep=$2; shift 2
  if /usr/bin/time -f '%e %M' -o time.out "$@" > run.out 2> run.err; then rc=0; else rc=$?; fi
  set -- $(tail -1 time.out)
  printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$rep" "$1" "$2" "$rc" >> times.tsv
  printf '  %-44s %7s s %8s KiB  exit %s\n' "$label" "$1" "$2" "$rc"
  [ "$rc" -eq 0 ] || { echo "  ! exit $rc:"; sed 's/^/    /' run.err run.out | tail -20; }
}
uptime | sed 's/^/before: /'
for i in $(seq "$REPS"); do
  echo "--- rep $i"
  for c in 1 4 8; do
    t "ducksafe push, REMOTE_CONCURRENCY $c" "$i" \
      "$B" --config p/config.yaml -q push --set "REMOTE_URL=s3://$BUCKET/r$i-c$c" --set "REMOTE_CONCURRENCY=$c"
  done
  t "boto3 upload_file" "$i" "$PY" boto.py up "$BACKUP" "r$i-boto/$(basename "$BACKUP")"
  rm -rf fresh && mkdir fresh && conf "r$i-c4" > fresh/config.yaml
  t "ducksafe restore --remote latest" "$i" sh -c "cd fresh && exec '$B' -q restore --remote latest"
  cmp -s fresh/simulation.duckdb "$BACKUP" || echo "  ! the restored database differs from the backup"
  rm -rf fresh
  t "boto3 download_file" "$i" "$PY" boto.py down "r$i-boto/$(basename "$BACKUP")" dl.duckdb
  cmp -s dl.duckdb "$BACKUP" || echo "  ! the boto3 download differs from the backup"
  rm -f dl.duckdb
  t "ducksafe verify --remote --read-data" "$i" \
    "$B" --config p/config.yaml -q verify --remote --read-data --set "REMOTE_URL=s3://$BUCKET/r$i-c4"
  # The server's disk: this rep's copies go (SeaweedFS reclaims them when it vacuums).
  for pfx in "r$i-c1" "r$i-c4" "r$i-c8" "r$i-boto"; do "$PY" boto.py delete "$pfx"; done
done
uptime | sed 's/^/after:  /'

# 6. Medians, and each row against boto3's figure for the same direction.
"$PY" - times.tsv <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    label, rep, wall, rss, rc = line.rstrip('\n').split('\t')
    if rc == '0':
        rows.setdefault(label, []).append((float(wall), int(rss)))
med = {k: (st.median(w for w, _ in v), st.median(r for _, r in v), len(v)) for k, v in rows.items()}
up = med.get('boto3 upload_file', (None,))[0]
down = med.get('boto3 download_file', (None,))[0]
print('\n| operation | wall (median) | runs | × boto3 | max RSS (median) |\n|---|---|---|---|---|')
for k, (w, r, n) in med.items():
    base = down if ('restore' in k or 'download' in k or 'verify' in k) else up
    x = f'{w / base:.2f}×' if base else ''
    print(f'| {k} | {w:.2f} s | {n} | {x} | {r / 1024:.0f} MiB |')
PY
