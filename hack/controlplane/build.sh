#!/usr/bin/env bash
# Builds the local control plane binaries from Go modules, at pinned versions,
# into a cache directory outside the repository keyed by those versions:
#
#   etcd                      go.etcd.io/etcd/server/v3     $ETCD_VERSION
#   kube-apiserver            k8s.io/kubernetes             $KUBE_VERSION
#   kube-controller-manager   k8s.io/kubernetes             $KUBE_VERSION
#   kube-scheduler            k8s.io/kubernetes             $KUBE_VERSION
#   kubectl                   k8s.io/kubernetes             $KUBE_VERSION
#   helm                      helm.sh/helm/v3               $HELM_VERSION
#
# Each component is built in its own small throwaway module so that minimal
# version selection in one cannot move the dependencies of another.  A second
# run finds the binaries and does nothing.  Prints the bin directory last.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
CACHE_ROOT="${FINETUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/finetune-operator}"
KEY="k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"
BIN="$CACHE_ROOT/controlplane/$KEY/bin"
WORK="$CACHE_ROOT/controlplane/$KEY/src"
mkdir -p "$BIN" "$WORK"

log() { echo "controlplane: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

have() { for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done; }

build_kubernetes() {
  have kube-apiserver kube-controller-manager kube-scheduler kubectl && return 0
  local dir="$WORK/kubernetes" minor="${KUBE_VERSION#v1.}"
  minor="${minor%%.*}"
  local staging="v0.${KUBE_VERSION#v1.}"
  log "building k8s.io/kubernetes@$KUBE_VERSION (staging modules at $staging); a cold build takes 15-30 minutes"
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  local info
  info="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION")" \
    || fail "go mod download k8s.io/kubernetes@$KUBE_VERSION"
  local upstream_mod
  upstream_mod="$(printf '%s' "$info" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module finetune-operator/controlplane/kubernetes"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "tool ("
    echo "	k8s.io/kubernetes/cmd/kube-apiserver"
    echo "	k8s.io/kubernetes/cmd/kube-controller-manager"
    echo "	k8s.io/kubernetes/cmd/kube-scheduler"
    echo "	k8s.io/kubernetes/cmd/kubectl"
    echo ")"
    echo
    # Every staging module the upstream go.mod requires at v0.0.0 is replaced
    # by its published tag: replace lines of a dependency are ignored.
    grep -E '^\s+k8s.io/[^ ]+ v0\.0\.0$' "$upstream_mod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } > go.mod
  go mod tidy >"$dir/tidy.log" 2>&1 || { tail -30 "$dir/tidy.log" >&2; fail "go mod tidy for k8s.io/kubernetes@$KUBE_VERSION"; }
  local pkgs="k8s.io/component-base/version k8s.io/client-go/pkg/version"
  local ldflags="-s -w"
  for p in $pkgs; do
    ldflags="$ldflags -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$BIN/$cmd" ] && continue
    log "  go build $cmd"
    go build -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" \
      || fail "go build k8s.io/kubernetes/cmd/$cmd@$KUBE_VERSION"
    mv "$BIN/$cmd.tmp" "$BIN/$cmd"
  done
}

build_etcd() {
  have etcd && return 0
  local dir="$WORK/etcd"
  log "building go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  printf 'module finetune-operator/controlplane/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n\ntool go.etcd.io/etcd/server/v3\n' "$ETCD_VERSION" > go.mod
  go mod tidy >"$dir/tidy.log" 2>&1 || { tail -30 "$dir/tidy.log" >&2; fail "go mod tidy for go.etcd.io/etcd/server/v3@$ETCD_VERSION"; }
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3 \
    || fail "go build go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  mv "$BIN/etcd.tmp" "$BIN/etcd"
}

build_helm() {
  have helm && return 0
  log "building helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  GOBIN="$WORK/helm-bin" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    || fail "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$WORK/helm-bin/helm" "$BIN/helm"
}

case "${1:-all}" in
  all) build_etcd; build_kubernetes; build_helm ;;
  etcd) build_etcd ;;
  kubernetes) build_kubernetes ;;
  helm) build_helm ;;
  bindir) ;;
  *) fail "unknown target $1 (all|etcd|kubernetes|helm|bindir)" ;;
esac
echo "$BIN"
