#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs every test.
#   - Rust: unit, property and integration tests (units as real processes over loopback,
#     SoftHSM2 as the PKCS#11 token that seals a unit's key and holds admin keys and key parts
#     (tests/tokens.rs), throwaway PostgreSQL clusters for the PostgreSQL store).
#   - Python: IBM's official keyprotect SDK against a real 'rotor dev' (tests/python), and
#     'rotor console' in headless Chromium driven by Playwright (the ceremony and a rotation
#     with a unit killed, by clicking; screenshots of every tab under pytest's tmp path), and a
#     GREP11 client generated from the service's .proto by grpcio-tools.
#   - PostgreSQL with two service replicas, once each: the rotation crash tests, the IBM SDK
#     suite through a round-robin proxy, and 'rotor demo --postgres --replicas 2' with a replica
#     killed during the reencryption (0 failed requests, every DEK verified).
#   - The code's layout: no source file over 800 lines, no two modules using each other
#     (scripts/check-layout.py).
#   - The systemd unit files of deploy/systemd (scripts/check-systemd.sh; installs systemd's
#     tools when missing and root).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

# SoftHSM2: the PKCS#11 token the unit sealing and admin token tests use. Installed when missing and root;
# otherwise it must already be there.
if ! command -v softhsm2-util >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update && apt-get install -y softhsm2
    else
        echo "softhsm2 is missing: install the Debian package softhsm2" >&2
        exit 1
    fi
fi

# Chromium: the browser the console suite (tests/python/test_console.py) drives through
# Playwright. Installed when missing and root; Playwright is pointed at it and never downloads
# a browser of its own.
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update && apt-get install -y chromium
    else
        echo "chromium is missing: install the Debian package chromium" >&2
        exit 1
    fi
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

# PostgreSQL: the store conformance suite and `rotor demo --postgres` start throwaway clusters
# from the system's binaries. Installed when missing and root; otherwise they must be there
# (or named by ROTOR_PG_BIN).
if [ -z "${ROTOR_PG_BIN:-}" ] && ! command -v initdb >/dev/null \
    && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update && apt-get install -y postgresql
    else
        echo "PostgreSQL is missing: install the Debian package postgresql" >&2
        exit 1
    fi
fi

# schemathesis gets a virtual environment of its own on a Python that does not crash it:
# CPython 3.11 before 3.11.8 raises "SystemError: AST constructor recursion depth mismatch"
# when Hypothesis describes a strategy deep in a draw (CPython gh-106905), which aborts the run
# on the key creation body. The newest interpreter on the machine is taken.
schemathesis_python() {
    local candidate candidates=(python3.13 python3.12)
    if command -v pyenv >/dev/null; then
        mapfile -t -O "${#candidates[@]}" candidates < <(
            ls -d "$(pyenv root)"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV
        )
    fi
    candidates+=(python3)
    for candidate in "${candidates[@]}"; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 12) or (3, 11, 8) <= v < (3, 12) else 1)' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "no Python 3.11.8 or later for schemathesis (install python3.12 or newer)" >&2
    return 1
}
SCHEMATHESIS_VENV="$PWD/target/schemathesis-venv"
if [ ! -x "$SCHEMATHESIS_VENV/bin/python" ]; then
    "$(schemathesis_python)" -m venv "$SCHEMATHESIS_VENV"
fi
"$SCHEMATHESIS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r tests/schemathesis/requirements.txt
export ROTOR_SCHEMATHESIS_PYTHON="$SCHEMATHESIS_VENV/bin/python"

# The code's shape (docs/ARCHITECTURE.md): file sizes, and modules that depend one way.
python3 scripts/check-layout.py

cargo build --locked -p rotor-cli
ROTOR_BIN="$PWD/target/debug/rotor" scripts/check-systemd.sh
cargo test --workspace --locked
ROTOR_BIN="$PWD/target/debug/rotor" python3 -m pytest -q tests/python

# The same suites on PostgreSQL with two replicas (the heavy ones run once: schemathesis and the
# other suites stay on the embedded default).
ROTOR_TEST_DEV_ARGS="--postgres --replicas 2" cargo test --locked -p rotor-cli --test rotation
ROTOR_DEV_ARGS="--postgres --replicas 2" ROTOR_BIN="$PWD/target/debug/rotor" \
    python3 -m pytest -q tests/python/test_keyprotect_sdk.py
target/debug/rotor demo --postgres --replicas 2 --keys 100000 --json | tail -n 1
