#!/usr/bin/env bash
# Quick start: runs `postcanary check` against a private Postfix + Dovecot on
# loopback with a small channel set for kommune.example, and prints one verdict
# per channel. Installs Postfix and Dovecot with apt-get when missing; nothing
# outside a temp dir is configured or started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
stack=$(mktemp -d /tmp/postcanary-try.XXXXXX)
chmod 755 "$stack"
cleanup() { bash "$root/tests/mailstack/mailstack.sh" stop "$stack/mail" >/dev/null 2>&1 || true; rm -rf "$stack"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bash tests/mailstack/mailstack.sh install
mkdir -p "$stack/mail"
bash tests/mailstack/mailstack.sh start "$stack/mail" "$(free_port)" "$(free_port)" "$(free_port)" "$(free_port)" >/dev/null
# shellcheck disable=SC1091
. "$stack/mail/env"

for user in social closed; do
  var="PASS_$user"
  printf '%s\n' "${!var}" > "$stack/$user.pw"
done

cat > "$stack/postcanary.toml" <<TOML
[ledger]
url = "sqlite://ledger.db"

[defaults]
deadline = "10s"
owner = "it-drift"

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = $SMTP_PORT
tls = "none"
from = "Postcanary <canary@kommune.example>"

[[inbox]]
name = "social"
kind = "imap"
host = "127.0.0.1"
port = $IMAP_PORT
tls = "none"
username = "social"
password = "file:social.pw"
after_confirm = "move:Postcanary"

[[inbox]]
name = "closed"
kind = "imap"
host = "127.0.0.1"
port = $IMAP_PORT
tls = "none"
username = "closed"
password = "file:closed.pw"

[[channel]]
id = "social-family-mail"
name = "Social og Familie (e-mail)"
kind = "mail"
to = "social@kommune.example"
inbox = "social"

[[channel]]
id = "retired-shared-mailbox"
name = "Retired mailbox that swallows mail"
kind = "mail"
to = "retired@kommune.example"
inbox = "social"

[[channel]]
id = "familie-routing-reverted"
name = "Familie (routed back to a closed mailbox)"
kind = "mail"
to = "familie@kommune.example"
inbox = "social"

[[channel]]
id = "mistyped-address"
name = "Mistyped secure-mail address"
kind = "mail"
to = "sikkerepost@kommune.example"
inbox = "social"

[[channel]]
id = "mistyped-address-must-bounce"
name = "Look-alike address (must bounce)"
kind = "mail"
to = "sikkerepost@kommune.example"
expect = "bounce"
TOML

cargo build --release --quiet
echo "Probing 5 channels on a private Postfix + Dovecot (deadline 10s)..."
set +e
./target/release/postcanary check -c "$stack/postcanary.toml"
code=$?
set -e
echo "(exit code $code: 0 = every verdict a success, 1 = at least one failure)"
