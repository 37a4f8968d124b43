#!/usr/bin/env bash
# Install Debian's Node.js and npm for the check of Evolink's own npm client against the
# simulator (tests/test_evolink_npm_client.py, tests/evolink_client_check.mjs); nothing when
# /usr/bin/npm exists. The test itself installs the npm package @evolinkai/evolink-media
# (from the npm registry) into a cache directory.
set -euo pipefail
exec bash "$(dirname "$0")/apt-install.sh" "/usr/bin/npm" nodejs npm
