#!/usr/bin/env bash
# Builds SeaweedFS (`weed`: an S3-compatible object store, Apache-2.0) from its Go
# module at a pinned version into a cache directory outside the repository, keyed by
# that version, the way hack/controlplane/build.sh builds the control plane.  The
# S3 tests start their own `weed` process on free loopback ports with a temporary
# data directory (tests/s3.py); nothing here starts a server.
#
# A second run finds the binary and does nothing.  Prints the bin directory last;
# exits non-zero with a message naming the module when the build fails.
set -euo pipefail

SEAWEEDFS_MODULE=github.com/seaweedfs/seaweedfs
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod"
CACHE_ROOT="${FINETUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/finetune-operator}"
BIN="$CACHE_ROOT/seaweedfs/$SEAWEEDFS_VERSION/bin"
WORK="$CACHE_ROOT/seaweedfs/$SEAWEEDFS_VERSION/src"

log() { echo "seaweedfs: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

if [ ! -x "$BIN/weed" ]; then
  command -v go >/dev/null 2>&1 || fail "no 'go' on PATH (needed to build $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION)"
  mkdir -p "$BIN"
  log "building $SEAWEEDFS_MODULE/weed@$SEAWEEDFS_VERSION; a cold build takes several minutes"
  rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
  # A throwaway module so that minimal version selection elsewhere cannot move
  # SeaweedFS's dependencies; its own go.mod decides them.
  printf 'module finetune-operator/seaweedfs\n\ngo 1.26.0\n\nrequire %s %s\n\ntool %s/weed\n' \
    "$SEAWEEDFS_MODULE" "$SEAWEEDFS_VERSION" "$SEAWEEDFS_MODULE" > go.mod
  go mod tidy >"$WORK/tidy.log" 2>&1 \
    || { tail -30 "$WORK/tidy.log" >&2; fail "go mod tidy for $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION"; }
  go build -trimpath -ldflags "-s -w" -o "$BIN/weed.tmp" "$SEAWEEDFS_MODULE/weed" >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log" >&2; fail "go build $SEAWEEDFS_MODULE/weed@$SEAWEEDFS_VERSION"; }
  mv "$BIN/weed.tmp" "$BIN/weed"
fi
"$BIN/weed" version >/dev/null 2>&1 || fail "$BIN/weed does not run ('weed version' failed)"
echo "$BIN"
