#!/usr/bin/env bash
# Usage: ensure_grpc_env.sh DIR
#
# Makes sure DIR is a Python venv with grpcio and grpcio-tools (pinned
# below) for peer_client.py, creating it or installing into it from PyPI as
# needed, and prints the venv's python on the last line of stdout (pip's
# output goes to stderr). A venv that already has the pinned versions is
# left as it is. Concurrent runs on the same DIR wait for each other.
# Needs python3 with the venv module and, for an install, PyPI.
set -euo pipefail

GRPCIO_VERSION=1.85.1
GRPCIO_TOOLS_VERSION=1.85.1

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
mkdir -p "$1"
dir=$(cd "$1" && pwd)
py="$dir/bin/python"

# One installer at a time per venv (cargo test runs tests in parallel).
exec 9>"$dir/.ensure_grpc_env.lock"
flock 9

# True when the venv's python has exactly the pinned versions.
have_pinned() {
  [ -x "$py" ] && "$py" - "$GRPCIO_VERSION" "$GRPCIO_TOOLS_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import grpc, grpc_tools.protoc  # noqa: F401  (importable, not just listed)
sys.exit(0 if (version("grpcio"), version("grpcio-tools")) == tuple(sys.argv[1:]) else 1)
EOF
}

if ! have_pinned; then
  if ! python3 -m venv "$dir" >&2; then
    echo "error: python3 -m venv $dir failed (is the venv module installed? on Debian: python3-venv)" >&2
    exit 1
  fi
  # Wheels only: building grpcio from source would take very long; better
  # to fail at once on a platform without wheels.
  if ! "$py" -m pip install --disable-pip-version-check --no-input --quiet \
      --timeout 60 --retries 3 --only-binary :all: \
      "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_TOOLS_VERSION" >&2; then
    echo "error: pip could not install grpcio==$GRPCIO_VERSION grpcio-tools==$GRPCIO_TOOLS_VERSION into $dir (is PyPI reachable?)" >&2
    exit 1
  fi
  if ! have_pinned; then
    echo "error: grpcio/grpcio-tools installed into $dir but do not import" >&2
    exit 1
  fi
fi
echo "$py"
