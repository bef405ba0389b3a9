#!/usr/bin/env bash
# Runs every test. Installs what the tests need (Postfix, Dovecot) with
# apt-get when missing; the tests start their own private instances on
# loopback from temp dirs and never touch the system's mail services.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/mailstack/mailstack.sh install
cargo test --all-targets "$@"
