#!/usr/bin/env bash
# Third-party identity providers on loopback for postcanary's tests.
#
#   idp.sh install    make sure node, npm and openssl are there (Debian's
#                     nodejs/npm/openssl via apt-get when missing) and that
#                     tests/idp/node_modules matches package-lock.json (npm ci
#                     when node_modules is missing or older than the lock file).
#                     Idempotent, works from any cwd, quiet on success.
#
# The servers themselves are started by the tests (tests/support/idp.rs):
#   node tests/idp/saml.mjs --port P --acs-url URL --audience SP_ENTITY_ID
#   node tests/idp/oidc.mjs --port P --client-id ID --client-secret S --redirect-uri URI
set -euo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STAMP="$DIR/node_modules/.postcanary-npm-ci"
MIN_NODE_MAJOR=18

die() { echo "idp.sh: $*" >&2; exit 1; }

LOG=
cleanup() { if [ -n "$LOG" ]; then rm -f "$LOG"; fi; }
trap cleanup EXIT

apt_install() { # packages...
  [ "$(id -u)" = 0 ] || die "$* missing and not root: install them (apt-get install $*)"
  command -v apt-get >/dev/null || die "$* missing and no apt-get to install them"
  export DEBIAN_FRONTEND=noninteractive
  LOG=$(mktemp)
  if ! apt-get install -y -q --no-install-recommends "$@" >"$LOG" 2>&1; then
    apt-get update -q >>"$LOG" 2>&1 || true
    apt-get install -y -q --no-install-recommends "$@" >>"$LOG" 2>&1 \
      || { cat "$LOG" >&2; die "apt-get install $* failed"; }
  fi
  rm -f "$LOG"; LOG=
}

ensure_tools() {
  local missing=()
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  command -v openssl >/dev/null || missing+=(openssl)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
  command -v node >/dev/null && command -v npm >/dev/null && command -v openssl >/dev/null \
    || die "node, npm or openssl still missing after apt-get install"
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge "$MIN_NODE_MAJOR" ] || die "node $(node --version) is too old: need >= $MIN_NODE_MAJOR"
}

up_to_date() {
  [ -d "$DIR/node_modules" ] && [ -f "$STAMP" ] \
    && [ ! "$DIR/package-lock.json" -nt "$STAMP" ] \
    && [ ! "$DIR/package.json" -nt "$STAMP" ]
}

# npm older than 10 (Debian 12's npm is 9.2) cannot read the "overrides" entry
# that replaces saml-idp's git dependency on samlp; such an npm runs this
# registry-published npm instead.
BOOTSTRAP_NPM=npm@10.9.9

npm_ci() {
  LOG=$(mktemp)
  local args=(ci --no-audit --no-fund --loglevel=error --prefix "$DIR")
  if ! (cd "$DIR" && npm "${args[@]}") >"$LOG" 2>&1; then
    # Run from elsewhere: npm exec must not read this project's package.json.
    echo "---- retrying with $BOOTSTRAP_NPM" >>"$LOG"
    if ! (cd "${TMPDIR:-/tmp}" && npm exec --yes --package="$BOOTSTRAP_NPM" -- npm "${args[@]}") >>"$LOG" 2>&1; then
      cat "$LOG" >&2
      die "npm ci in $DIR failed"
    fi
  fi
  rm -f "$LOG"; LOG=
  touch "$STAMP"
}

do_install() {
  ensure_tools
  up_to_date && return 0
  # Several test processes may install at once: one does it, the others wait.
  if command -v flock >/dev/null; then
    exec 9>"${TMPDIR:-/tmp}/postcanary-idp-install-$(id -u).lock"
    flock -w 600 9 || die "timed out waiting for another idp.sh install"
  fi
  up_to_date || npm_ci
}

case "${1:-}" in
  install) do_install ;;
  *) die "usage: idp.sh install" ;;
esac
