#!/usr/bin/env bash
# A private Postfix + Dovecot on loopback for postcanary's tests.
#
#   mailstack.sh install                      install postfix/dovecot if missing (apt-get), start no system service
#   mailstack.sh start DIR SMTP SUB IMAP LMTP start a stack whose config, queue, mail and logs all live in DIR
#   mailstack.sh stop DIR                     stop it (idempotent)
#   mailstack.sh restart-imap DIR             stop and start Dovecot
#   mailstack.sh stop-imap DIR | start-imap DIR
#   mailstack.sh reload DIR                   reload Postfix after editing its texthash: maps
#   mailstack.sh flush DIR                    retry deferred mail now
#
# The domain kommune.example has mailboxes social, borger, closed, canary, ops;
# retired@ is accepted and discarded; familie@ is aliased to closed@; every other
# recipient is refused at RCPT time. SMTP needs no auth from loopback; SUB requires
# SASL AUTH (PLAIN/LOGIN, through Dovecot). Nothing under /etc is changed and no
# system service is started.
set -euo pipefail

USERS="social borger closed canary ops"
WAIT_SECONDS=20

die() { echo "mailstack: $*" >&2; exit 1; }

install() {
  if command -v postfix >/dev/null && command -v dovecot >/dev/null \
     && [ -x /usr/lib/dovecot/lmtp ] && [ -x /usr/lib/dovecot/imap ]; then
    return 0
  fi
  local policy=/usr/sbin/policy-rc.d created_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  # shellcheck disable=SC2064
  trap "[ -n '$created_policy' ] && rm -f '$policy'" EXIT
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends postfix dovecot-imapd dovecot-lmtpd >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends postfix dovecot-imapd dovecot-lmtpd >/dev/null
  }
  # If a package started the system instances anyway, stop them (not ours).
  if [ -f /var/spool/postfix/pid/master.pid ]; then postfix stop >/dev/null 2>&1 || true; fi
  if [ -f /run/dovecot/master.pid ]; then doveadm stop >/dev/null 2>&1 || true; fi
}

wait_port() { # port what
  local i
  for i in $(seq 1 $((WAIT_SECONDS * 10))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

show_logs() {
  local dir=$1
  echo "---- postfix log" >&2; tail -n 30 "$dir/postfix/maillog" >&2 2>/dev/null || true
  echo "---- dovecot log" >&2; tail -n 30 "$dir/dovecot/dovecot.log" >&2 2>/dev/null || true
}

write_config() {
  local dir=$1 smtp=$2 sub=$3 imap=$4 lmtp=$5
  mkdir -p "$dir/postfix" "$dir/dovecot" "$dir/mail"
  chmod 755 "$dir" "$dir/postfix" "$dir/dovecot"
  # Every parent must be traversable by the postfix, dovecot and mail users.
  local p=$dir
  while [ "$p" != "/" ]; do chmod o+x "$p" 2>/dev/null || true; p=$(dirname "$p"); done

  : > "$dir/env"
  echo "SMTP_PORT=$smtp" >> "$dir/env"
  echo "SUBMISSION_PORT=$sub" >> "$dir/env"
  echo "IMAP_PORT=$imap" >> "$dir/env"
  echo "LMTP_PORT=$lmtp" >> "$dir/env"
  : > "$dir/dovecot/users"
  : > "$dir/postfix/vmailbox"
  local u pw
  for u in $USERS; do
    pw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "PASS_$u=$pw" >> "$dir/env"
    echo "$u:{PLAIN}$pw::::::" >> "$dir/dovecot/users"
    echo "$u@kommune.example OK" >> "$dir/postfix/vmailbox"
  done
  echo "retired@kommune.example OK" >> "$dir/postfix/vmailbox"
  chmod 640 "$dir/dovecot/users"
  chgrp dovecot "$dir/dovecot/users"
  echo "familie@kommune.example closed@kommune.example" > "$dir/postfix/virtual"
  echo "retired@kommune.example discard:" > "$dir/postfix/transport"
  chown -R mail:mail "$dir/mail"

  cat > "$dir/postfix/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/postfix/queue
data_directory = $dir/postfix/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.kommune.example
mydomain = kommune.example
myorigin = kommune.example
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
virtual_mailbox_domains = kommune.example
virtual_mailbox_maps = texthash:$dir/postfix/vmailbox
virtual_alias_maps = texthash:$dir/postfix/virtual
transport_maps = texthash:$dir/postfix/transport
virtual_transport = lmtp:inet:127.0.0.1:$lmtp
smtputf8_enable = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_sasl_type = dovecot
smtpd_sasl_path = $dir/dovecot/run/auth-client
smtpd_sasl_auth_enable = no
broken_sasl_auth_clients = no
biff = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
maillog_file = $dir/postfix/maillog
maillog_file_prefixes = $dir
smtpd_banner = \$myhostname ESMTP postcanary-test
CF
  cat > "$dir/postfix/master.cf" <<CF
127.0.0.1:$smtp inet n - n - - smtpd
127.0.0.1:$sub inet n - n - - smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
lmtp      unix - - n - - lmtp
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
CF

  cat > "$dir/dovecot/dovecot.conf" <<CF
base_dir = $dir/dovecot/run
state_dir = $dir/dovecot/state
log_path = $dir/dovecot/dovecot.log
listen = 127.0.0.1
protocols = imap lmtp
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
mail_location = maildir:$dir/mail/%n
mail_uid = mail
mail_gid = mail
first_valid_uid = 8
first_valid_gid = 8
mail_max_userip_connections = 200
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%n $dir/dovecot/users
}
userdb {
  driver = static
  args = uid=mail gid=mail home=$dir/mail/%n
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Junk {
    special_use = \\Junk
    auto = create
  }
  mailbox Postcanary {
    auto = create
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp
  }
}
service auth {
  unix_listener auth-client {
    mode = 0666
  }
}
service stats {
  unix_listener stats-reader {
    mode = 0600
  }
  unix_listener stats-writer {
    mode = 0666
  }
}
CF
}

env_get() { grep "^$2=" "$1/env" | cut -d= -f2; }

start_imap() {
  local dir=$1
  # Daemons must not inherit our stdout/stderr: a caller reading them to EOF would hang.
  dovecot -c "$dir/dovecot/dovecot.conf" </dev/null >>"$dir/start.log" 2>&1 \
    || { cat "$dir/start.log" >&2; show_logs "$dir"; die "dovecot did not start"; }
  wait_port "$(env_get "$dir" IMAP_PORT)" && wait_port "$(env_get "$dir" LMTP_PORT)" \
    || { show_logs "$dir"; die "dovecot ports did not open within ${WAIT_SECONDS}s"; }
}

stop_imap() {
  local dir=$1 pidfile=$1/dovecot/run/master.pid pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

start() {
  [ $# -eq 5 ] || die "usage: start DIR SMTP_PORT SUBMISSION_PORT IMAP_PORT LMTP_PORT"
  local dir smtp=$2 sub=$3 imap=$4 lmtp=$5
  mkdir -p "$1"
  dir=$(cd "$1" && pwd)
  write_config "$dir" "$smtp" "$sub" "$imap" "$lmtp"
  start_imap "$dir"
  mkdir -p "$dir/postfix/queue" "$dir/postfix/data"
  chown postfix:postfix "$dir/postfix/data"
  postfix -c "$dir/postfix" post-install create-missing >/dev/null
  postfix -c "$dir/postfix" check >/dev/null 2>&1 || postfix -c "$dir/postfix" check
  postfix -c "$dir/postfix" start </dev/null >>"$dir/start.log" 2>&1 \
    || { cat "$dir/start.log" >&2; show_logs "$dir"; die "postfix did not start"; }
  wait_port "$smtp" && wait_port "$sub" || { show_logs "$dir"; die "postfix ports did not open within ${WAIT_SECONDS}s"; }
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  if [ -f "$dir/postfix/queue/pid/master.pid" ]; then
    postfix -c "$dir/postfix" stop >/dev/null 2>&1 || postfix -c "$dir/postfix" abort >/dev/null 2>&1 || true
  fi
  stop_imap "$dir"
}

cmd=${1:-}
shift || true
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  stop) stop "$1" ;;
  restart-imap) stop_imap "$1"; start_imap "$1" ;;
  stop-imap) stop_imap "$1" ;;
  start-imap) start_imap "$1" ;;
  reload) postfix -c "$1/postfix" reload </dev/null >>"$1/start.log" 2>&1 ;;
  flush) postqueue -c "$1/postfix" -f </dev/null >>"$1/start.log" 2>&1 ;;
  *) die "unknown command '$cmd' (install|start|stop|restart-imap|stop-imap|start-imap|reload|flush)" ;;
esac
