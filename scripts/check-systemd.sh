#!/usr/bin/env bash
# Checks the systemd unit files in deploy/systemd:
#   - systemd-analyze verify on copies whose ExecStart points at an executable that exists here
#     (the rotor named by ROTOR_BIN, else target/debug/rotor, else /bin/true), and
#     any warning it prints about these units fails the check;
#   - with the built rotor, every flag an ExecStart passes is one its command accepts;
#   - systemd-analyze security --offline: the hardening stays at exposure 2.0 or below;
#   - the sysusers file creates both users.
set -euo pipefail
cd "$(dirname "$0")/.."

units_dir=deploy/systemd
installed_bin=/usr/local/bin/rotor
# systemd-analyze security shows exposure from 0.0 to 10.0; its --threshold counts tenths.
max_exposure_tenths=20

if ! command -v systemd-analyze >/dev/null || ! command -v systemd-sysusers >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update && apt-get install -y systemd
    else
        echo "systemd-analyze and systemd-sysusers are missing: install the Debian package systemd" >&2
        exit 1
    fi
fi
systemd_version=$(systemd-analyze --version | awk 'NR == 1 { print $2 }')
if [ "$systemd_version" -lt 250 ]; then
    echo "systemd $systemd_version is too old for 'systemd-analyze security --offline': 250 or newer is needed" >&2
    exit 1
fi

if [ -n "${ROTOR_BIN:-}" ] && [ ! -x "$ROTOR_BIN" ]; then
    echo "ROTOR_BIN=$ROTOR_BIN is not an executable" >&2
    exit 1
fi
bin=${ROTOR_BIN:-$PWD/target/debug/rotor}
if [ -x "$bin" ]; then
    real_bin=yes
else
    echo "note: $bin is not built; ExecStart points at /bin/true and the flags are not checked" >&2
    bin=/bin/true
    real_bin=no
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
fail() {
    echo "FAIL: $*" >&2
    failed=1
}

# The unit files' command lines, continuation lines joined, one per line.
exec_starts() {
    sed -e ':join' -e '/\\$/{N; s/\\\n//; b join}' "$1" | sed -n 's/^ExecStart=//p'
}

for unit in "$units_dir"/*.service; do
    name=$(basename "$unit")
    grep -q "^$installed_bin " <<<"$(exec_starts "$unit")" ||
        fail "$name: ExecStart does not run $installed_bin"
    sed "s|$installed_bin|$bin|g" "$unit" >"$work/$name"
done

# A template is verified through an instance, so that %i resolves.
targets=()
for unit in "$work"/*.service; do
    case "$unit" in
    *@.service) targets+=("${unit%@.service}@check.service") ;;
    *) targets+=("$unit") ;;
    esac
done
if ! output=$(systemd-analyze verify "${targets[@]}" 2>&1); then
    fail "systemd-analyze verify failed"
fi
[ -n "$output" ] && printf '%s\n' "$output"
# Warnings about other units on this machine do not count; those naming ours do.
if printf '%s\n' "$output" | grep -E -q "$work|rotor-server\.service|rotor-unit@"; then
    fail "systemd-analyze verify warned about the unit files (above)"
fi

if [ "$real_bin" = yes ]; then
    for unit in "$units_dir"/*.service; do
        name=$(basename "$unit")
        while read -r _ subcommand rest; do
            # The rotor subcommand is the words before the first flag.
            words=("$subcommand")
            for word in $rest; do
                case "$word" in -*) break ;; esac
                words+=("$word")
            done
            if ! help=$("$bin" "${words[@]}" --help 2>&1); then
                fail "$name: 'rotor ${words[*]} --help' failed: $help"
                continue
            fi
            for flag in $(grep -o -- '--[a-z][a-z-]*' <<<"$rest" | sort -u); do
                grep -q -- "$flag\b" <<<"$help" || fail "$name: rotor ${words[*]} has no flag $flag"
            done
        done < <(exec_starts "$unit")
    done
fi

for target in "${targets[@]}"; do
    if ! report=$(systemd-analyze security --offline=yes --threshold="$max_exposure_tenths" "$target" 2>&1); then
        printf '%s\n' "$report" >&2
        fail "$(basename "$target"): exposure above $((max_exposure_tenths / 10)).$((max_exposure_tenths % 10))"
    fi
    grep 'Overall exposure level' <<<"$report"
done

mkdir "$work/root" "$work/root/etc"
systemd-sysusers --root="$work/root" "$PWD/$units_dir/rotor.sysusers" >/dev/null 2>&1 ||
    fail "systemd-sysusers rejected $units_dir/rotor.sysusers"
for user in $(sed -n 's/^User=//p' "$units_dir"/*.service | sort -u); do
    grep -q "^$user:" "$work/root/etc/passwd" 2>/dev/null ||
        fail "$units_dir/rotor.sysusers does not create the user $user"
done

if [ "$failed" = 0 ]; then
    echo "systemd unit files OK ($(basename -a "$units_dir"/*.service | tr '\n' ' ')with ExecStart at $bin)"
fi
exit "$failed"
