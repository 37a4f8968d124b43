#!/usr/bin/env bash
# Install Debian's PostgreSQL server binaries for the scale-out stack (deployments/stack.py)
# and its test (tests/test_stack.py).
#
# Idempotent: does nothing when /usr/lib/postgresql/*/bin/initdb already exists.
# Only the binaries are needed: deployments/stack.py runs its own cluster (initdb, pg_ctl)
# in the stack's folder; the Debian package also creates a `main` cluster as a system
# service, which the stack does not use (it runs on another port).
#
# Quiet on success; on failure prints apt's output and exits non-zero.
# Meant to run as root on a fresh Debian 12 machine (uses sudo if not root).
set -euo pipefail

have_initdb() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_initdb; then
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-postgres.sh: must run as root (or have sudo) to install postgresql" >&2
        exit 1
    fi
fi

log="$(mktemp -t install-postgres.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

# Run an apt command quietly, up to 3 times (mirrors and the dpkg lock can be transiently
# unavailable on a fresh machine); on final failure print its output and exit 1.
apt_run() {
    local attempt
    for attempt in 1 2 3; do
        if "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=120 "$@" >"$log" 2>&1; then
            return 0
        fi
        [ "$attempt" -lt 3 ] && sleep 5
    done
    echo "install-postgres.sh: failed: apt-get $*" >&2
    cat "$log" >&2
    exit 1
}

apt_run update -qq
# No recommends: they pull sysstat, locales-all and the like, which the stack does not need.
apt_run install -y -qq --no-install-recommends postgresql

if ! have_initdb; then
    echo "install-postgres.sh: apt-get finished but /usr/lib/postgresql/*/bin/initdb is missing" >&2
    exit 1
fi
exit 0
