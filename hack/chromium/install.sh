#!/usr/bin/env bash
# Installs headless Chromium from Debian's `chromium` package, for the test that renders
# `kubectl finetune report`'s HTML and inspects the screenshot and the console.
#
# Idempotent: does nothing when `chromium --version` already works. The tests start their own
# headless Chromium with a profile directory of their own; nothing here runs as a service.
# Needs root (or sudo) the first time. A browser Debian installed elsewhere may be named with
# CHROMIUM=/path/to/chromium; the tests honour the same variable.
set -euo pipefail

CHROMIUM="${CHROMIUM:-chromium}"
if "$CHROMIUM" --version >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "hack/chromium/install.sh: Chromium is missing and installing it needs root" \
             "(apt-get install chromium)" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# Fonts: without any, every glyph renders as an empty box and the report would be unreadable.
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core

"$CHROMIUM" --version | head -n 1
