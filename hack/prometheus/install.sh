#!/usr/bin/env bash
# Installs Prometheus (server and promtool) from Debian's `prometheus` package.
#
# Idempotent: does nothing when `prometheus --version` already works. Tests and the
# demo start their own Prometheus processes on free loopback ports with their own
# config and data directory; the package's systemd service is never relied on, and
# it is stopped and disabled here where systemd runs, so nothing listens on :9090
# behind the tests' backs. Needs root (or sudo) the first time.
set -euo pipefail

if prometheus --version >/dev/null 2>&1 && promtool --version >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "hack/prometheus/install.sh: Prometheus is missing and installing it needs root" \
             "(apt-get install prometheus)" >&2
        exit 1
    fi
fi

# No service may start during installation where there is no init system (containers,
# CI runners): policy-rc.d answers 101 "action forbidden" to invoke-rc.d.
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    created_policy=1
fi
cleanup() { if [ -n "$created_policy" ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends prometheus

# Where systemd manages services, keep the packaged daemon out of the way.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi

prometheus --version | head -n 1
promtool --version | head -n 1
