#!/usr/bin/env bash
# The test command: builds every binary (the whole-process tests in tests/ run the real ones),
# then runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo test --workspace "$@"
