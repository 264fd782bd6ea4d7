#!/usr/bin/env bash
# The test command. Installs, once and cached, the real services the
# integration tests start on 127.0.0.1 (pinned versions, checked at every
# run and reinstalled when absent or different), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${STREAMSQL_CACHE:-$HOME/.cache/streamsql}"
# Builds are reused across runs from a target directory outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

# tansu, a Kafka-protocol broker in Rust (../shared/notes/kafka-here.md):
# built once (about 16 minutes on 2 cores) into the cache.
TANSU_VERSION=0.6.0
tools="$cache/tools"
if [ "$("$tools/bin/tansu" --version 2>/dev/null)" != "tansu $TANSU_VERSION" ]; then
  echo "building tansu $TANSU_VERSION into $tools" >&2
  (unset CARGO_TARGET_DIR; cargo install tansu --version "$TANSU_VERSION" --locked \
    --features dynostore,libsql --root "$tools")
fi
export STREAMSQL_TANSU="$tools/bin/tansu"

# Python services, in one virtualenv: moto's S3 server (checkpoints in a bucket).
MOTO_VERSION=5.2.5
venv="$cache/venv"
installed() {
  "$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true
}
if [ "$(installed moto)" != "$MOTO_VERSION" ]; then
  echo "installing moto[server]==$MOTO_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
export STREAMSQL_MOTO_SERVER="$venv/bin/moto_server"

cargo test --release --locked "$@"
