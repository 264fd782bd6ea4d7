# Sourced by scripts/test.sh and scripts/bench.sh: installs, once and cached,
# the real services that tests and benchmarks start on 127.0.0.1 (pinned
# versions, checked at every run and reinstalled when absent or different).

cache="${STREAMSQL_CACHE:-$HOME/.cache/streamsql}"
# Builds are reused across runs from a target directory outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

# tansu, a Kafka-protocol broker in Rust (../shared/notes/kafka-here.md):
# built once (about 16 minutes on 2 cores) into the cache.
install_tansu() {
  local version=0.6.0 tools="$cache/tools"
  if [ "$("$tools/bin/tansu" --version 2>/dev/null)" != "tansu $version" ]; then
    echo "building tansu $version into $tools" >&2
    (unset CARGO_TARGET_DIR; cargo install tansu --version "$version" --locked \
      --features dynostore,libsql --root "$tools")
  fi
  export STREAMSQL_TANSU="$tools/bin/tansu"
}

# Python services, in one virtualenv: moto's S3 server (checkpoints in a bucket).
install_moto() {
  local version=5.2.5 venv="$cache/venv"
  local installed
  installed="$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('moto'))" 2>/dev/null || true)"
  if [ "$installed" != "$version" ]; then
    echo "installing moto[server]==$version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version"
  fi
  export STREAMSQL_MOTO_SERVER="$venv/bin/moto_server"
}
