#!/usr/bin/env bash
# End to end on a Docker engine: build the CPU image, start `docker compose --profile cpu
# --profile train-cpu up`, submit a job with curl as a newcomer would, check its results,
# a trainer checkpoint, and that the rewriter is the only published service; then tear down.
#   bash scripts/compose_up.sh          (KEEP=1 leaves the stack running)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker >/dev/null || { echo "compose_up.sh needs a Docker engine" >&2; exit 2; }
work="$(mktemp -d)"
env_file="$work/env"
key="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
sed -e "s/^MINDGAP_API_KEY=.*/MINDGAP_API_KEY=$key/" \
    -e "s/^TRAINER_MAX_STEPS=.*/TRAINER_MAX_STEPS=2/" \
    -e "s/^TRAINER_SAVE_EVERY=.*/TRAINER_SAVE_EVERY=1/" \
    -e "s/^TRAINER_GLOBAL_BATCH=.*/TRAINER_GLOBAL_BATCH=4/" .env.example > "$env_file"
compose=(docker compose --env-file "$env_file" --profile cpu --profile train-cpu)
cleanup() {
  [ "${KEEP:-0}" = 1 ] || "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
api="http://127.0.0.1:8000"
auth=(-H "Authorization: Bearer $key")

"${compose[@]}" build
"${compose[@]}" up -d --wait --wait-timeout 900

# A job of the 8 shipped sample problems (one per line of mindgap/samples/problems.jsonl).
python3 -c 'import json, sys
items = [json.loads(line) for line in open("mindgap/samples/problems.jsonl")][:8]
json.dump({"items": items, "options": {"max_tokens": 128, "k_self": 2, "k_guided": 2}},
          sys.stdout)' > "$work/job.json"
job="$(curl -fsS "${auth[@]}" -H 'Content-Type: application/json' \
  --data @"$work/job.json" "$api/v1/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')"
echo "job $job submitted"
for _ in $(seq 1 180); do
  status="$(curl -fsS "${auth[@]}" "$api/v1/jobs/$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')"
  case "$status" in completed|completed_with_failures|cancelled) break ;; esac
  sleep 5
done
[ "$status" = completed ] || { echo "job ended $status" >&2; exit 1; }
count="$(curl -fsS "${auth[@]}" "$api/v1/jobs/$job/results" | grep -c '"source"')"
[ "$count" = 8 ] || { echo "expected 8 results, got $count" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "$api/v1/jobs")" = 401 ] \
  || { echo "/v1/jobs answered without the key" >&2; exit 1; }

# The trainer consumed the stream: a checkpoint on its volume.
for _ in $(seq 1 120); do
  if "${compose[@]}" run --rm --no-deps --entrypoint sh trainer-cpu -c \
      'ls -d /checkpoints/live/checkpoints/step-*[0-9]' 2>/dev/null; then break; fi
  sleep 5
done
"${compose[@]}" run --rm --no-deps --entrypoint sh trainer-cpu -c \
  'ls -d /checkpoints/live/checkpoints/step-*[0-9]' >/dev/null

# Only the rewriter is published. `compose port` also answers (":0", status 0) for a port
# the image EXPOSEs but nothing publishes: only a host port other than 0 counts.
published() {
  local out
  out="$("${compose[@]}" port "$1" "$2" 2>/dev/null)" || return 1
  [ -n "$out" ] && [ "${out##*:}" != 0 ]
}
for service in redis verifier worker-cpu trainer-cpu; do
  for port in 6379 8000 8001; do
    if published "$service" "$port"; then
      echo "$service publishes port $port" >&2; exit 1
    fi
  done
done
echo "compose_up: ok (job $job: $count results, trainer checkpoint written)"
