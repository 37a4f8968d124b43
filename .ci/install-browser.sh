#!/usr/bin/env bash
# Install Debian's chromium for the Playwright browser tests (tests/browser/); nothing when
# /usr/bin/chromium exists.
#
# `playwright install` cannot be used on our machines (it downloads its own browser from a
# CDN that is not reachable); Debian's package is used instead and the tests launch it with
# executable_path="/usr/bin/chromium".
set -euo pipefail
exec bash "$(dirname "$0")/apt-install.sh" "/usr/bin/chromium" chromium
