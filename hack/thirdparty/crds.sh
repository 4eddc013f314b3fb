#!/usr/bin/env bash
# Fetches the CRDs of the traffic routers a Rollout can drive, from their Go modules, at the
# versions pinned in versions.env, into a cache directory outside the repository keyed by
# those versions, and prints that directory:
#
#   gateway-api/   sigs.k8s.io/gateway-api   config/crd/standard: HTTPRoute, Gateway,
#                                            GatewayClass, ReferenceGrant
#   istio/         istio.io/api              kubernetes/customresourcedefinitions.gen.yaml:
#                                            VirtualService and DestinationRule, split out
#   kserve/        github.com/kserve/kserve  config/crd/full: InferenceService
#   prometheus-operator/  github.com/prometheus-operator/prometheus-operator
#                         example/prometheus-operator-crd: ServiceMonitor, PodMonitor,
#                         PrometheusRule (the chart's monitoring objects are checked against them)
#
# Modules come from the Go module proxy into the module cache (`go mod download`), nothing
# else is downloaded. A second run finds the directory complete and only prints it.
# On failure it names the module and version and exits non-zero.
#
#   crds.sh              fetch when needed (`make thirdparty-crds`), print the directory
#   crds.sh --installed  fetch nothing: print the directory, or exit 3 saying how to fetch it
#                        (what tests call, so a fetch failure is reported by make, before them)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod
CACHE_ROOT="${FINETUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/finetune-operator}"
KEY="gateway-api-${GATEWAY_API_VERSION}_istio-api-${ISTIO_API_VERSION}_kserve-${KSERVE_VERSION}_prometheus-operator-${PROMETHEUS_OPERATOR_VERSION}"
OUT="$CACHE_ROOT/thirdparty-crds/$KEY"

log() { echo "thirdparty-crds: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

if [ -f "$OUT/.complete" ]; then
  echo "$OUT"
  exit 0
fi
case "${1:-}" in
  "") ;;
  --installed)
    log "the third-party CRDs ($KEY) are not fetched into $CACHE_ROOT yet; run \`make thirdparty-crds\`"
    exit 3 ;;
  *) fail "unknown argument $1 (expected none or --installed)" ;;
esac
command -v go >/dev/null || fail "go is not on PATH; the CRDs come from Go modules (Go >= 1.26 needed)"

mkdir -p "$CACHE_ROOT/thirdparty-crds"
STAGING="$(mktemp -d "$CACHE_ROOT/thirdparty-crds/.staging.XXXXXX")"
EMPTY="$(mktemp -d)"  # outside any go.mod, so no module's requirements get involved
# Runs on every exit. Once the staging directory has been moved into place it no longer
# exists, so each step checks first: an EXIT trap's failing command would otherwise become
# the script's exit status (under set -e) after all the work succeeded.
cleanup() {
  local rc=$?
  if [ -d "$STAGING" ]; then chmod -R u+w "$STAGING" 2>/dev/null || true; rm -rf "$STAGING"; fi
  rm -rf "$EMPTY"
  exit "$rc"
}
trap cleanup EXIT

# module_dir MODULE VERSION -> the module's extracted directory in the module cache
module_dir() {
  local module="$1" version="$2" info dir
  log "go mod download $module@$version"
  if ! info="$(cd "$EMPTY" && go mod download -json "$module@$version" 2>&1)"; then
    fail "go mod download $module@$version:
$info"
  fi
  dir="$(printf '%s' "$info" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  [ -n "$dir" ] && [ -d "$dir" ] || fail "go mod download $module@$version printed no module directory:
$info"
  echo "$dir"
}

# copy_file SRC DEST_DIR MODULE@VERSION
copy_file() {
  [ -f "$1" ] || fail "$3 has no ${1#*@*/} (the file moved upstream? check versions.env)"
  mkdir -p "$2"
  cp "$1" "$2/" && chmod u+w "$2/$(basename "$1")"
}

# split_crd FILE CRD_NAME DEST -> the one YAML document defining CRD_NAME
split_crd() {
  awk -v name="$2" '
    function flush() { if (doc ~ ("\n  name: " name "\n")) { printf "%s", doc; found = 1 } doc = "" }
    /^---/ { flush(); next }
    { doc = doc $0 "\n" }
    END { flush(); exit found ? 0 : 1 }
  ' "$1" > "$3"
}

gateway_dir="$(module_dir "$GATEWAY_API_MODULE" "$GATEWAY_API_VERSION")"
for kind in httproutes gateways gatewayclasses referencegrants; do
  copy_file "$gateway_dir/config/crd/standard/gateway.networking.k8s.io_$kind.yaml" "$STAGING/gateway-api" \
    "$GATEWAY_API_MODULE@$GATEWAY_API_VERSION"
done

istio_dir="$(module_dir "$ISTIO_API_MODULE" "$ISTIO_API_VERSION")"
istio_all="$istio_dir/kubernetes/customresourcedefinitions.gen.yaml"
[ -f "$istio_all" ] || fail "$ISTIO_API_MODULE@$ISTIO_API_VERSION has no kubernetes/customresourcedefinitions.gen.yaml"
mkdir -p "$STAGING/istio"
for crd in virtualservices destinationrules; do
  split_crd "$istio_all" "$crd.networking.istio.io" "$STAGING/istio/networking.istio.io_$crd.yaml" \
    || fail "$ISTIO_API_MODULE@$ISTIO_API_VERSION: no CRD $crd.networking.istio.io in customresourcedefinitions.gen.yaml"
done

kserve_dir="$(module_dir "$KSERVE_MODULE" "$KSERVE_VERSION")"
copy_file "$kserve_dir/config/crd/full/serving.kserve.io_inferenceservices.yaml" "$STAGING/kserve" \
  "$KSERVE_MODULE@$KSERVE_VERSION"

promop_dir="$(module_dir "$PROMETHEUS_OPERATOR_MODULE" "$PROMETHEUS_OPERATOR_VERSION")"
for kind in servicemonitors podmonitors prometheusrules; do
  copy_file "$promop_dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$STAGING/prometheus-operator" \
    "$PROMETHEUS_OPERATOR_MODULE@$PROMETHEUS_OPERATOR_VERSION"
done

{
  echo "$GATEWAY_API_MODULE $GATEWAY_API_VERSION"
  echo "$ISTIO_API_MODULE $ISTIO_API_VERSION"
  echo "$KSERVE_MODULE $KSERVE_VERSION"
  echo "$PROMETHEUS_OPERATOR_MODULE $PROMETHEUS_OPERATOR_VERSION"
} > "$STAGING/modules.txt"
touch "$STAGING/.complete"

# Another run may have finished first: keep whichever is complete.
if [ -f "$OUT/.complete" ]; then
  echo "$OUT"
  exit 0
fi
rm -rf "$OUT"
mv "$STAGING" "$OUT"
echo "$OUT"
