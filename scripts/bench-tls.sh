#!/usr/bin/env bash
# What TLS costs the unwrap path: Key Protect unwrap requests per second against `rotor dev`
# with the API over HTTPS and, in the same run, over plain HTTP (`--insecure-plain-http`); the
# units are on mutual TLS in both. With ROTOR_PLAIN_BIN naming a `rotor` binary built before TLS
# (every link plain HTTP), that binary's `rotor dev` is measured in the same rounds too, so the
# whole cost of TLS (API and unit link) shows. Runs alternate so that all see the same machine;
# the medians and their ratios are printed (docs/BENCHMARKS.md).
#
#   scripts/bench-tls.sh [SECONDS] [CONNECTIONS] [ROUNDS]     (defaults: 20 16 3)
#   ROTOR_PLAIN_BIN=/path/to/old/rotor scripts/bench-tls.sh
#
# Needs wrk (Debian package `wrk`) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
connections=${2:-16}
rounds=${3:-3}
for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "bench-tls: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
cargo build --release --locked -p rotor-cli >&2
rotor="$PWD/target/release/rotor"
work=$(mktemp -d)
dev_pid=
cleanup() {
    [ -n "$dev_pid" ] && kill "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# Starts a dev instance (plain HTTP when $1 is "http"), creates a root key, wraps a 32-byte DEK,
# and writes the wrk script that unwraps it.
start() {
    local scheme=$1 dir="$work/$1" binary=$rotor
    rm -rf "$dir"
    mkdir -p "$dir"
    local extra=()
    [ "$scheme" = http ] && extra=(--insecure-plain-http)
    [ "$scheme" = plain ] && binary=$ROTOR_PLAIN_BIN
    "$binary" dev --units 2 --recovery-units 0 --dir "$dir/state" --info-file "$dir/info.json" \
        "${extra[@]}" >"$dir/dev.log" 2>&1 &
    dev_pid=$!
    for _ in $(seq 600); do [ -s "$dir/info.json" ] && break; sleep 0.1; done
    [ -s "$dir/info.json" ] || { cat "$dir/dev.log" >&2; exit 1; }
    python3 - "$dir" <<'EOF'
import json, subprocess, sys
d = sys.argv[1]
info = json.load(open(f"{d}/info.json"))
def call(method, path, body=None, token=None, form=None):
    args = ["curl", "-sS", "--fail-with-body", "-X", method,
            info["endpoint"] + path, "-H", f"bluemix-instance: {info['instance']}"]
    if "ca_cert" in info:
        args += ["--cacert", info["ca_cert"]]
    if token:
        args += ["-H", f"authorization: Bearer {token}"]
    if form:
        args += ["--data", form]
    if body is not None:
        args += ["-H", "content-type: application/json", "--data", json.dumps(body)]
    return json.loads(subprocess.run(args, check=True, capture_output=True).stdout or b"null")
token = call("POST", "/identity/token",
             form=f"grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey={info['api_keys']['writer']}")["access_token"]
key = call("POST", "/api/v2/keys", {"metadata": {"collectionType": "application/vnd.ibm.kms.key+json",
           "collectionTotal": 1}, "resources": [{"type": "application/vnd.ibm.kms.key+json",
           "name": "bench", "extractable": False}]}, token)["resources"][0]["id"]
wrapped = call("POST", f"/api/v2/keys/{key}/actions/wrap", {"plaintext": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="}, token)
open(f"{d}/unwrap.lua", "w").write(
    'wrk.method = "POST"\n'
    f'wrk.body = {json.dumps(json.dumps({"ciphertext": wrapped["ciphertext"]}))}\n'
    'wrk.headers["content-type"] = "application/json"\n'
    f'wrk.headers["authorization"] = "Bearer {token}"\n'
    f'wrk.headers["bluemix-instance"] = "{info["instance"]}"\n')
open(f"{d}/url", "w").write(f"{info['endpoint']}/api/v2/keys/{key}/actions/unwrap")
EOF
}

stop() {
    kill "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null
    dev_pid=
}

schemes=(https http)
[ -n "${ROTOR_PLAIN_BIN:-}" ] && schemes+=(plain)
declare -A results=([https]="" [http]="" [plain]="")
for round in $(seq "$rounds"); do
    for scheme in "${schemes[@]}"; do
        start "$scheme"
        out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$work/$scheme/unwrap.lua" "$(cat "$work/$scheme/url")")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
        [ -z "$non2xx" ] || { echo "$out" >&2; echo "bench-tls: $non2xx requests failed" >&2; exit 1; }
        echo "round $round $scheme: $rps requests/s" >&2
        results[$scheme]+="$rps "
        stop
    done
done
python3 - "${results[https]}" "${results[http]}" "$seconds" "$connections" "${results[plain]}" <<'EOF'
import statistics, sys
https = [float(x) for x in sys.argv[1].split()]
http = [float(x) for x in sys.argv[2].split()]
plain = [float(x) for x in sys.argv[5].split()]
h, p = statistics.median(https), statistics.median(http)
runs = lambda xs: ", ".join(f"{x:,.0f}" for x in xs)
print(f"unwrap, {sys.argv[4]} connections, {sys.argv[3]} s per run, {len(https)} runs each (medians):")
print(f"  HTTPS API, units on mutual TLS:        {h:,.0f} requests/s   runs: {runs(https)}")
print(f"  plain HTTP API, units on mutual TLS:   {p:,.0f} requests/s   runs: {runs(http)}")
if plain:
    b = statistics.median(plain)
    print(f"  before TLS (plain HTTP on every link): {b:,.0f} requests/s   runs: {runs(plain)}")
print(f"  API TLS: HTTPS / HTTP = {h / p:.2f}")
if plain:
    print(f"  every link: HTTPS and mutual TLS / before TLS = {h / b:.2f}")
EOF
