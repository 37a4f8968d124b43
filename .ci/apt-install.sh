#!/usr/bin/env bash
# Install Debian packages for the test suite, quietly and idempotently.
#
#   bash .ci/apt-install.sh GLOB PACKAGE...
#
# Does nothing when a file matches GLOB (the package is there already); else runs
# `apt-get update` then `apt-get install --no-install-recommends PACKAGE...` (each up to
# 3 times: mirrors and the dpkg lock can be transiently unavailable on a fresh machine) and
# checks that GLOB matches afterwards. Quiet on success; on failure prints apt's output and
# exits non-zero. Meant to run as root on a fresh Debian 12 machine (uses sudo if not root).
set -euo pipefail

want="$1"
shift
name="$(basename "$0")"

present() {
    compgen -G "$want" >/dev/null
}

if present; then
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "$name: must run as root (or have sudo) to install $*" >&2
        exit 1
    fi
fi

log="$(mktemp -t apt-install.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

apt_run() {
    local attempt
    for attempt in 1 2 3; do
        if "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=120 "$@" >"$log" 2>&1; then
            return 0
        fi
        [ "$attempt" -lt 3 ] && sleep 5
    done
    echo "$name: failed: apt-get $*" >&2
    cat "$log" >&2
    exit 1
}

apt_run update -qq
# No recommends: they pull what a headless test run does not need (mesa, udev, locales, ...).
apt_run install -y -qq --no-install-recommends "$@"

if ! present; then
    echo "$name: apt-get finished but nothing matches $want" >&2
    exit 1
fi
exit 0
