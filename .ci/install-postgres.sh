#!/usr/bin/env bash
# Install Debian's PostgreSQL server binaries for the scale-out stack (deployments/stack.py)
# and its test (tests/test_stack.py); nothing when /usr/lib/postgresql/*/bin/initdb exists.
#
# Only the binaries are needed: deployments/stack.py runs its own cluster (initdb, pg_ctl)
# in the stack's folder; the Debian package also creates a `main` cluster as a system
# service, which the stack does not use (it runs on another port).
set -euo pipefail
exec bash "$(dirname "$0")/apt-install.sh" "/usr/lib/postgresql/*/bin/initdb" postgresql
