#!/usr/bin/env bash
# Sets up whatever is missing (scripts/setup.sh), then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ACF_SETUP_PROFILE=debug scripts/setup.sh
cargo test --all-targets "$@"
