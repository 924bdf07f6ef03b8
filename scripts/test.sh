#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs every test.
#   - Rust: unit, property and integration tests (units as real processes over loopback).
#   - Python: IBM's official keyprotect SDK against a real 'rotor dev' (tests/python).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

cargo build --locked -p rotor-cli
cargo test --workspace --locked
ROTOR_BIN="$PWD/target/debug/rotor" python3 -m pytest -q tests/python
