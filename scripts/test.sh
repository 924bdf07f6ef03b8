#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs every test.
#   - Rust: unit, property and integration tests (units as real processes over loopback,
#     SoftHSM2 as the PKCS#11 token that seals a unit's key).
#   - Python: IBM's official keyprotect SDK against a real 'rotor dev' (tests/python).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

# SoftHSM2: the PKCS#11 token the unit sealing tests use. Installed when missing and root;
# otherwise it must already be there.
if ! command -v softhsm2-util >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update && apt-get install -y softhsm2
    else
        echo "softhsm2 is missing: install the Debian package softhsm2" >&2
        exit 1
    fi
fi

cargo build --locked -p rotor-cli
cargo test --workspace --locked
ROTOR_BIN="$PWD/target/debug/rotor" python3 -m pytest -q tests/python
