#!/usr/bin/env bash
# Runs every test. Installs what the tests need (Postfix, Dovecot, Chromium,
# OpenSSL's CLI, Node.js and the npm identity providers saml-idp and
# oidc-provider, Python with a venv of pinned Django packages, xmlsec1) when missing; the tests start their own private instances on
# loopback from temp dirs and never touch the system's mail services.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/mailstack/mailstack.sh install
# Courier IMAP, the second real IMAP server (tests/otherimap_e2e.rs): its .debs
# conflict with Dovecot, so they are fetched and extracted, never installed.
bash tests/otherimap/otherimap.sh install
# PostgreSQL (Debian's package, no system cluster started) for the Postgres ledger tests.
bash tests/postgres/postgres.sh install
# Debian's Chromium, for the status-page test in a real browser.
if ! command -v chromium >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
  }
fi
# poppler-utils (pdftotext, pdftoppm) reads back the report and evidence pages
# that Chromium prints to PDF (tests/report.rs).
if ! command -v pdftotext >/dev/null || ! command -v pdftoppm >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends poppler-utils >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends poppler-utils >/dev/null
  }
fi
# openssl makes throwaway keys and certificates for the SAML tests.
if ! command -v openssl >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssl >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssl >/dev/null
  }
fi
# dnsmasq (the binary only, no system service) as the tests' authoritative DNS server.
if ! command -v dnsmasq >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dnsmasq-base >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dnsmasq-base >/dev/null
  }
fi
# OpenDKIM, to verify DKIM-signed probes (tests/dkim_opendkim.rs); no service is started.
if [ ! -x /usr/sbin/opendkim ]; then
  created_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends opendkim opendkim-tools >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends opendkim opendkim-tools >/dev/null
  }
  if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
# The compliance beds (tests/compliance_e2e.rs): OpenDMARC and Exim, fetched with
# `apt-get download` and extracted (Exim conflicts with Postfix), never installed.
bash tests/compliance/beds.sh install
# The peer benchmark's check_email_delivery (Nagios plugin) and its Perl IMAP client.
if [ ! -x /usr/lib/nagios/plugins/check_email_delivery ] || ! perl -MMail::IMAPClient -e1 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends monitoring-plugins-contrib libmail-imapclient-perl >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends monitoring-plugins-contrib libmail-imapclient-perl >/dev/null
  }
fi
# Node.js (apt-get when missing) and the pinned npm identity providers.
bash tests/idp/idp.sh install
# The Django site of tests/webapp_e2e.rs: pinned packages in a venv in the cache dir.
bash tests/webapp/webapp.sh install >/dev/null
# xmlsec1 (libxmlsec1's CLI) signs the test SP's POST-binding AuthnRequests.
if ! command -v xmlsec1 >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends xmlsec1 >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends xmlsec1 >/dev/null
  }
fi
# --all-targets also runs the benchmarks (harness = false) once each, as a
# smoke test with a small size; the figures in docs/benchmarks.md come from
# `cargo bench` at full size.
POSTCANARY_BENCH_N=${POSTCANARY_BENCH_N:-10} cargo test --all-targets "$@"
