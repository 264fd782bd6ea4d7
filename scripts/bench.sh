#!/usr/bin/env bash
# The benchmark command: installs the services the Kafka and Elasticsearch
# benchmarks start on 127.0.0.1 and DuckDB for the W1 comparison (cached, see
# tools.sh), then runs the
# benchmarks (`scripts/bench.sh --bench kafka` runs one).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
install_kafka
install_osmem
install_opensearch
install_duckdb
cargo bench --locked "$@"
