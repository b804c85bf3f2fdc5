#!/usr/bin/env bash
# `make e2e-kind`: the same e2e suite, against a kind cluster where pods really run.
# Needs Docker (a running engine) and kind on PATH; kubectl and helm come from the project cache.
#
#   scripts/e2e-kind.sh [pytest args...]
#
# Environment: KIND_CLUSTER (default sentient-e2e), KIND_NODE_IMAGE (default: kind's own),
#              KEEP_CLUSTER=1 to leave the cluster running afterwards.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SENTIENT_CACHE:-$HOME/.cache/sentient-operator}"
cluster="${KIND_CLUSTER:-sentient-e2e}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -1)"
operator_image="ghcr.io/sentient-operator/operator:${version}"
runtime_image="ghcr.io/sentient-operator/agent-runtime:${version}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed; make e2e-kind needs Docker (use 'make e2e' for the local control plane)"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (is it running, may this user use it?); 'make e2e' needs no Docker"
command -v kind >/dev/null 2>&1 || die "kind is not installed (e.g. 'go install sigs.k8s.io/kind@v0.31.0'); 'make e2e' needs no kind"

# kubectl and helm from the cache (make setup installs them); they go first on PATH.
if [ ! -x "$cache/bin/kubectl" ] || [ ! -x "$cache/bin/helm" ]; then
  say "installing kubectl and helm into $cache/bin"
  (cd "$root" && PYTHONPATH="$root/operator:$root" "$cache/venv/bin/python" -m e2e.tools ensure kubectl-helm)
fi
export PATH="$cache/bin:$PATH"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/sentient-kind-XXXXXX")"
kubeconfig="$workdir/kubeconfig"
created=0
cleanup() {
  rc=$?
  if [ "$created" = 1 ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    say "deleting kind cluster $cluster"
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  elif [ "$created" = 1 ]; then
    say "cluster $cluster kept; KUBECONFIG=$kubeconfig (delete with: kind delete cluster --name $cluster)"
    trap - EXIT
    exit "$rc"
  fi
  rm -rf "$workdir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  die "a kind cluster named $cluster exists already; delete it or set KIND_CLUSTER"
fi

say "creating kind cluster $cluster"
node_image=()
[ -n "${KIND_NODE_IMAGE:-}" ] && node_image=(--image "$KIND_NODE_IMAGE")
kind create cluster --name "$cluster" --kubeconfig "$kubeconfig" --wait 120s "${node_image[@]}"
created=1

build_and_load() {
  local dockerfile=$1 image=$2
  if [ -f "$root/$dockerfile" ]; then
    say "building $image from $dockerfile"
    docker build -q -f "$root/$dockerfile" -t "$image" "$root" >/dev/null
    say "loading $image into $cluster"
    kind load docker-image --name "$cluster" "$image"
  else
    say "no $dockerfile: skipping $image"
  fi
}
build_and_load Dockerfile.operator "$operator_image"
build_and_load Dockerfile.runtime "$runtime_image"

say "running the e2e suite against kind"
export E2E_KUBECONFIG="$kubeconfig"
export E2E_KIND=1 E2E_OPERATOR_IMAGE="$operator_image" E2E_RUNTIME_IMAGE="$runtime_image"
cd "$root"
if [ "$#" -gt 0 ]; then
  make e2e PYTEST_ARGS="$*"
else
  make e2e
fi
