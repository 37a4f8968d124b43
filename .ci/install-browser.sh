#!/usr/bin/env bash
# Install Debian's chromium for the Playwright browser tests (tests/browser/).
#
# Idempotent: does nothing when /usr/bin/chromium already exists.
# `playwright install` cannot be used on our machines (it downloads its own browser
# from a CDN that is not reachable); Debian's package is used instead and the tests
# launch it with executable_path="/usr/bin/chromium".
#
# Quiet on success; on failure prints apt's output and exits non-zero.
# Meant to run as root on a fresh Debian 12 machine (uses sudo if not root).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-browser.sh: must run as root (or have sudo) to install chromium" >&2
        exit 1
    fi
fi

log="$(mktemp -t install-browser.XXXXXX.log)"
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
    echo "install-browser.sh: failed: apt-get $*" >&2
    cat "$log" >&2
    exit 1
}

apt_run update -qq
# No recommends: they pull mesa, udev, upower, ... which a headless browser does not need.
apt_run install -y -qq --no-install-recommends chromium

if [ ! -x "$CHROMIUM" ]; then
    echo "install-browser.sh: apt-get finished but $CHROMIUM is missing" >&2
    exit 1
fi
exit 0
