#!/usr/bin/env bash
# The test command: installs the services the integration tests start on
# 127.0.0.1 (cached, see tools.sh), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
install_kafka
install_moto
install_osmem
install_opensearch
install_prometheus
install_compose
cargo test --release --locked "$@"
