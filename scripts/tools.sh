# Sourced by scripts/test.sh and scripts/bench.sh: installs, once and cached,
# the real services that tests and benchmarks start on 127.0.0.1 (pinned
# versions, checked at every run and reinstalled when absent or different).

cache="${STREAMSQL_CACHE:-$HOME/.cache/streamsql}"
# Builds are reused across runs from a target directory outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

# Apache Kafka (the broker itself, KRaft mode) from Maven Central, for the
# Kafka tests and benchmark: the jars of scripts/kafka/pom.xml in one folder,
# run on the machine's Java 17 by tests/it/common/broker.rs.
install_kafka() {
  local version
  version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)
  local dir="$cache/tools/kafka-$version"
  if [ ! -f "$dir/installed" ]; then
    command -v java > /dev/null || { echo "Java 17 or newer is needed to run Kafka" >&2; return 1; }
    echo "fetching Apache Kafka $version (Maven Central) into $dir" >&2
    rm -rf "$dir"
    mvn -q -B -f scripts/kafka/pom.xml dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$dir/lib" >&2
    touch "$dir/installed"
  fi
  export STREAMSQL_KAFKA_LIB="$dir/lib"
}

# Python packages, one virtualenv, each pinned: `pip_install NAME VERSION [SPEC]`
# (SPEC adds extras, e.g. `moto[server]`). Prints the virtualenv's directory.
pip_install() {
  local name=$1 version=$2 spec=${3:-$1} venv="$cache/venv" installed
  installed="$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)"
  if [ "$installed" != "$version" ]; then
    echo "installing $spec==$version into $venv" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec==$version" >&2
  fi
  echo "$venv"
}

# moto's S3 server (checkpoints in a bucket).
install_moto() {
  export STREAMSQL_MOTO_SERVER="$(pip_install moto 5.2.5 'moto[server]')/bin/moto_server"
}

# osmem-server, an Elasticsearch-API server (../shared/notes/elasticsearch-here.md),
# for the Elasticsearch sink's tests and benchmark.
install_osmem() {
  local venv
  venv="$(pip_install osmem-server 0.1.6)"
  export STREAMSQL_OSMEM="$("$venv/bin/python" -c 'import osmem_server, os; print(os.path.join(os.path.dirname(osmem_server.__file__), "bin", "osmem-server"))')"
}

# A docker compose front-end, to validate docker-compose.yml (no Docker engine
# is needed for `config`): the docker CLI plugin when present, else Debian's
# docker-compose, installed when apt can. Unset when neither is available.
install_compose() {
  if docker compose version > /dev/null 2>&1; then
    export STREAMSQL_COMPOSE="docker compose"
    return
  fi
  if ! command -v docker-compose > /dev/null && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "installing docker-compose (Debian) to validate docker-compose.yml" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose > /dev/null 2>&1 || true
  fi
  if command -v docker-compose > /dev/null; then
    export STREAMSQL_COMPOSE="docker-compose"
  fi
}
