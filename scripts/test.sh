#!/usr/bin/env bash
# The test command: installs what the tests run besides cargo when it is missing
# (scripts/install-test-deps.sh: root and apt, quiet when all is present), checks the manifests
# (scripts/check-manifests.sh: YAML and checkov), builds every binary (the whole-process tests in
# tests/ run the real ones), then runs every test of the workspace. Extra arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-test-deps.sh
./scripts/check-manifests.sh
cargo build --workspace --bins
cargo test --workspace "$@"
