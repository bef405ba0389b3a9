#!/usr/bin/env bash
# A real Django site for postcanary's form tests (loopback only).
#
#   webapp.sh install   make sure python3 with venv is there (Debian's python3-venv
#                       via apt-get when missing) and that the venv in the cache
#                       dir has the pinned packages of requirements.txt. Prints
#                       the venv's python on success. Idempotent, quiet.
#
# The server itself is started by the tests (tests/support/webapp.rs): gunicorn
# with its own TLS (a certificate from a CA that openssl makes per test).
set -euo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REQ="$DIR/requirements.txt"
HASH=$(sha256sum "$REQ" | cut -c1-12)
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/postcanary"
VENV="$CACHE/webapp-venv-$HASH"

die() { echo "webapp.sh: $*" >&2; exit 1; }

apt_install() {
  [ "$(id -u)" = 0 ] || die "$* missing and not root: install them (apt-get install $*)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "$@" >/dev/null
  }
}

do_install() {
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  command -v openssl >/dev/null || apt_install openssl
  if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.postcanary-ok" ]; then
    echo "$VENV/bin/python"; return 0
  fi
  mkdir -p "$CACHE"
  if command -v flock >/dev/null; then
    exec 9>"$CACHE/webapp-install.lock"
    flock -w 600 9 || die "timed out waiting for another webapp.sh install"
  fi
  if [ ! -f "$VENV/.postcanary-ok" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    LOG=$(mktemp)
    if ! "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >"$LOG" 2>&1; then
      cat "$LOG" >&2; rm -f "$LOG"; die "pip install -r requirements.txt failed"
    fi
    rm -f "$LOG"
    touch "$VENV/.postcanary-ok"
  fi
  echo "$VENV/bin/python"
}

case "${1:-}" in
  install) do_install ;;
  *) die "usage: webapp.sh install" ;;
esac
