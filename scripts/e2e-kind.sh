#!/usr/bin/env bash
# `make e2e-kind`: the kind tests (e2e/kind/), where pods really run from the project's images.
#
#   scripts/e2e-kind.sh [pytest args...]
#
# 1. a Docker engine (scripts/docker-engine.sh installs docker.io and starts dockerd when absent);
# 2. every image, built here and cached by the hash of its inputs (python -m e2e.kind.images):
#    offline, kind's node image too; online (a registry answers), kind's standard node image;
# 3. a kind cluster (kind from the Go module proxy), the project's images loaded into it;
# 4. pytest e2e/kind: the chart is helm-installed with the images built in step 2.
#
# Environment:
#   KIND_CLUSTER       cluster name (default sentient-kind)
#   KEEP_CLUSTER=1     leave the cluster running afterwards (prints its KUBECONFIG)
#   E2E_KUBECONFIG     run against this cluster instead of creating one (the images must be
#                      pullable by its nodes: set E2E_OPERATOR_IMAGE, E2E_RUNTIME_IMAGE,
#                      E2E_REDIS_IMAGE to references it can pull, or load them yourself)
#   SENTIENT_KIND_MODE offline | online | auto (default: auto, online when `docker pull` works)
#   KIND_STAGE=1       called by `make test`: where Docker cannot run, say so in one line and
#                      exit 0 (only this stage is skipped)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SENTIENT_CACHE:-$HOME/.cache/sentient-operator}"
cluster="${KIND_CLUSTER:-sentient-kind}"
export SENTIENT_CACHE="$cache"
export PYTHONPATH="$root/operator:$root"
export PATH="$cache/bin:$cache/venv/bin:$PATH"
py="$cache/venv/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
stamp() { date +%s; }
t0=$(stamp)
lap() { say "$1 ($(( $(stamp) - t0 )) s since start)"; }

rc=0
"$root/scripts/setup.sh" --kind || rc=$?
if [ "$rc" = 3 ] && [ "${KIND_STAGE:-0}" = 1 ]; then
  echo "kind stage SKIPPED: no usable Docker engine on this machine (see above); every other stage ran" >&2
  exit 0
fi
[ "$rc" = 0 ] || exit "$rc"
lap "setup done"

say "building images (cached by content hash; python -m e2e.kind.images)"
env_file="$(mktemp)"
"$py" -m e2e.kind.images env > "$env_file"
# shellcheck disable=SC1090
source "$env_file"
rm -f "$env_file"
lap "images ready (mode: $KIND_MODE)"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/sentient-kind-XXXXXX")"
created=0
cleanup() {
  rc=$?
  if [ "$created" = 1 ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    say "deleting kind cluster $cluster"
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  elif [ "$created" = 1 ]; then
    say "cluster $cluster kept; KUBECONFIG=$workdir/kubeconfig (delete with: kind delete cluster --name $cluster)"
    exit "$rc"
  fi
  rm -rf "$workdir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${E2E_KUBECONFIG:-}" ]; then
  if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    say "deleting the kind cluster $cluster left over from an earlier run"
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  "$py" -m e2e.kind.cluster config "$KIND_MODE" > "$workdir/kind.yaml"
  node_image=()
  [ -n "$KIND_NODE_IMAGE" ] && node_image=(--image "$KIND_NODE_IMAGE")
  say "creating kind cluster $cluster ${KIND_NODE_IMAGE:+from $KIND_NODE_IMAGE}"
  created=1
  kind create cluster --name "$cluster" --kubeconfig "$workdir/kubeconfig" --config "$workdir/kind.yaml" \
    --wait 180s "${node_image[@]}"
  lap "cluster ready"
  say "loading the project's images into $cluster"
  kind load docker-image --name "$cluster" "$E2E_OPERATOR_IMAGE" "$E2E_RUNTIME_IMAGE" "$E2E_REDIS_IMAGE" \
    ${E2E_OPENBAO_IMAGE:+"$E2E_OPENBAO_IMAGE"}
  lap "images loaded"
  export E2E_KUBECONFIG="$workdir/kubeconfig"
fi

say "running the kind tests"
export E2E_KIND=1
cd "$root"
"$root/scripts/pytest.sh" e2e/kind -p no:cacheprovider -rA "$@"
lap "kind tests done"
