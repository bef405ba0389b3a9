#!/usr/bin/env bash
# A private Postfix + Dovecot on loopback for postcanary's tests.
#
#   mailstack.sh install                      install postfix/dovecot if missing (apt-get), leave no system service running
#   mailstack.sh start DIR SMTP SUB IMAP LMTP start a stack whose config, queue, mail and logs all live in DIR
#   mailstack.sh stop DIR                     stop it (idempotent)
#   mailstack.sh restart-imap DIR             stop Dovecot completely and start it again
#   mailstack.sh stop-imap DIR | start-imap DIR
#   mailstack.sh reload DIR                   reload Postfix after editing its texthash: maps
#   mailstack.sh flush DIR                    retry deferred mail now
#
# Layout of DIR: env (KEY=value: ports and PASS_<user>), postfix/ (main.cf,
# master.cf, texthash maps vmailbox/virtual/transport, maillog), spool/ (the
# Postfix queue), data/ (Postfix data), dovecot/ (dovecot.conf, users,
# dovecot.log, run/ = base_dir, state/), mail/<user>/ (maildirs).
#
# The domain kommune.example has mailboxes social, borger, closed, canary, ops;
# Postfix offers STARTTLS with a throwaway certificate. retired@ is accepted and
# discarded; familie@ is aliased to closed@;
# spamfiltered@ lands in social's Junk folder (user+Folder@ addressing); every
# other recipient is refused at RCPT time. SMTP needs no auth from loopback; SUB requires
# SASL AUTH (PLAIN/LOGIN, through Dovecot). Nothing under /etc is changed and no
# system service is started.
set -euo pipefail

USERS="social borger closed canary ops"
PACKAGES="postfix dovecot-imapd dovecot-lmtpd openssl"
WAIT_SECONDS=20
# Unprivileged owner of the maildirs (Dovecot refuses uid 0 for mail).
MAIL_USER=mail

die() { echo "mailstack: $*" >&2; exit 1; }

# ---------------------------------------------------------------- install

POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=

APT_LOG=

cleanup_install() {
  if [ -n "$CREATED_POLICY" ]; then rm -f "$POLICY"; fi
  if [ -n "$APT_LOG" ]; then rm -f "$APT_LOG"; fi
}

installed() {
  command -v postfix >/dev/null && command -v dovecot >/dev/null && command -v openssl >/dev/null || return 1
  local p
  for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
  done
}

stop_system_services() {
  # The system instances (default config), never a test instance.
  if [ -f /etc/postfix/main.cf ] && postfix status >/dev/null 2>&1; then
    postfix stop >/dev/null 2>&1 || true
  fi
  local pid
  if [ -f /run/dovecot/master.pid ]; then
    pid=$(cat /run/dovecot/master.pid 2>/dev/null || true)
    if running "$pid"; then
      doveadm stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    fi
  fi
}

do_install() {
  installed && return 0
  trap cleanup_install EXIT
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"
    chmod 755 "$POLICY"
    CREATED_POLICY=1
  fi
  APT_LOG=$(mktemp)
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  if ! apt-get install -y -q --no-install-recommends $PACKAGES >"$APT_LOG" 2>&1; then
    apt-get update -q >>"$APT_LOG" 2>&1 || true
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $PACKAGES >>"$APT_LOG" 2>&1 \
      || { cat "$APT_LOG" >&2; die "apt-get install $PACKAGES failed"; }
  fi
  stop_system_services
  installed || die "packages $PACKAGES still missing after apt-get install"
}

# ---------------------------------------------------------------- helpers

wait_port() { # port
  local i
  for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

show_logs() {
  local dir=$1
  echo "---- start.log" >&2; tail -n 30 "$dir/start.log" >&2 2>/dev/null || true
  echo "---- postfix log" >&2; tail -n 30 "$dir/postfix/maillog" >&2 2>/dev/null || true
  echo "---- dovecot log" >&2; tail -n 30 "$dir/dovecot/dovecot.log" >&2 2>/dev/null || true
}

env_get() { sed -n "s/^$2=//p" "$1/env"; }

running() { # pid: alive and not a zombie waiting to be reaped
  local _pid _comm state
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
  { read -r _pid _comm state _ < "/proc/$1/stat"; } 2>/dev/null || return 1
  [ "$state" != Z ] && [ "$state" != X ]
}

pid_alive() { # pidfile
  [ -f "$1" ] || return 1
  running "$(head -n 1 "$1" | tr -d ' ')"
}

kill_pidfile() { # pidfile [grace tenths]: TERM the master, wait, then KILL what is left of its session
  local pidfile=$1 grace=${2:-50} pid i
  [ -f "$pidfile" ] || return 0
  pid=$(head -n 1 "$pidfile" | tr -d ' ')
  if running "$pid"; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < grace; i++)); do
      running "$pid" || break
      sleep 0.1
    done
  fi
  # Both masters are session leaders (setsid): their children share the session
  # and would otherwise linger for seconds (Dovecot's log and auth processes).
  if [ -n "$pid" ] && session_alive "$pid"; then
    kill -9 -- "-$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      session_alive "$pid" || break
      sleep 0.1
    done
  fi
  rm -f "$pidfile"
}

session_alive() { # sid: any live (non-zombie) process left in that session?
  ps -o stat= -s "$1" 2>/dev/null | grep -qv '^[ZX]'
}

# ---------------------------------------------------------------- config

write_config() {
  local dir=$1 smtp=$2 sub=$3 imap=$4 lmtp=$5
  mkdir -p "$dir/postfix" "$dir/dovecot" "$dir/mail"
  chmod 755 "$dir" "$dir/postfix" "$dir/dovecot"
  # Every parent must be traversable by the postfix, dovecot and mail users.
  local p=$dir
  while [ "$p" != "/" ]; do chmod o+x "$p" 2>/dev/null || true; p=$(dirname "$p"); done

  {
    echo "SMTP_PORT=$smtp"
    echo "SUBMISSION_PORT=$sub"
    echo "IMAP_PORT=$imap"
    echo "LMTP_PORT=$lmtp"
  } > "$dir/env"
  # A throwaway certificate: Postfix offers STARTTLS (opportunistically), as real MX hosts do.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=mx.kommune.example -keyout "$dir/postfix/tls-key.pem" -out "$dir/postfix/tls-cert.pem" \
    >/dev/null 2>&1 || die "openssl could not make the test certificate"
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
  {
    echo "familie@kommune.example closed@kommune.example"
    # What a server-side spam filter does to a message: files it in Junk.
    echo "spamfiltered@kommune.example social+Junk@kommune.example"
  } > "$dir/postfix/virtual"
  echo "retired@kommune.example discard:" > "$dir/postfix/transport"
  chown -R "$MAIL_USER:$MAIL_USER" "$dir/mail"

  local mail_uid
  mail_uid=$(id -u "$MAIL_USER")

  cat > "$dir/postfix/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/spool
data_directory = $dir/data
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
smtpd_recipient_restrictions = reject_unlisted_recipient
unknown_virtual_mailbox_reject_code = 550
virtual_mailbox_domains = kommune.example
virtual_mailbox_maps = texthash:$dir/postfix/vmailbox
virtual_alias_maps = texthash:$dir/postfix/virtual
transport_maps = texthash:$dir/postfix/transport
virtual_transport = lmtp:inet:127.0.0.1:$lmtp
# user+Folder@ looks up user@ and Dovecot files it into Folder (spam-filter stand-in).
recipient_delimiter = +
smtputf8_enable = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no
smtpd_tls_security_level = may
smtpd_tls_received_header = yes
smtpd_tls_chain_files = $dir/postfix/tls-key.pem, $dir/postfix/tls-cert.pem
smtp_tls_security_level = none
lmtp_tls_security_level = none
smtpd_sasl_type = dovecot
smtpd_sasl_path = $dir/dovecot/run/auth-client
smtpd_sasl_auth_enable = no
broken_sasl_auth_clients = no
biff = no
in_flow_delay = 0s
smtpd_error_sleep_time = 0s
# A daemon that died (e.g. submission while Dovecot auth was down) is retried at once.
service_throttle_time = 1s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
maillog_file = $dir/postfix/maillog
maillog_file_prefixes = $dir
smtpd_banner = \$myhostname ESMTP postcanary-test
CF
  # chroot column (5th) is n everywhere: the services must reach DIR and Dovecot's socket.
  cat > "$dir/postfix/master.cf" <<CF
127.0.0.1:$smtp inet n - n - - smtpd
127.0.0.1:$sub inet n - n - - smtpd
  -o syslog_name=postfix/submission
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
tlsmgr    unix - - n 1000? 1 tlsmgr
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
mail_uid = $MAIL_USER
mail_gid = $MAIL_USER
first_valid_uid = $mail_uid
first_valid_gid = $mail_uid
mail_max_userip_connections = 200
recipient_delimiter = +
lmtp_save_to_detail_mailbox = yes
# No stats connection: a process killed during its stats handshake stalls shutdown 5 s.
stats_writer_socket_path =
# Fast failures for wrong-password tests.
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%n $dir/dovecot/users
}
userdb {
  driver = static
  args = uid=$MAIL_USER gid=$MAIL_USER home=$dir/mail/%n
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
# No per-IP auth penalty (2..15 s growing delays after failed logins from 127.0.0.1).
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  unix_listener auth-client {
    mode = 0666
  }
}
CF
}

# ---------------------------------------------------------------- start/stop

start_imap() {
  local dir=$1
  [ -f "$dir/dovecot/dovecot.conf" ] || die "no stack in $dir"
  # Daemons must not inherit our stdout/stderr: a caller reading them to EOF would hang.
  dovecot -c "$dir/dovecot/dovecot.conf" </dev/null >>"$dir/start.log" 2>&1 \
    || { show_logs "$dir"; die "dovecot did not start"; }
  if ! { wait_port "$(env_get "$dir" IMAP_PORT)" && wait_port "$(env_get "$dir" LMTP_PORT)"; }; then
    show_logs "$dir"; die "dovecot ports did not open within ${WAIT_SECONDS}s"
  fi
  pid_alive "$dir/dovecot/run/master.pid" || { show_logs "$dir"; die "dovecot exited after starting"; }
}

stop_imap() {
  # Dovecot killed soon after starting can take ~5 s to wind down: 1.5 s grace, then KILL.
  kill_pidfile "$1/dovecot/run/master.pid" 15
}

make_queue() { # the queue directories with the owners and modes of /etc/postfix/postfix-files
  local q=$1/spool d
  install -d -o root -g root -m 755 "$q" "$q/pid"
  for d in active bounce corrupt defer deferred flush hold incoming private saved trace; do
    install -d -o postfix -g root -m 700 "$q/$d"
  done
  install -d -o postfix -g postdrop -m 730 "$q/maildrop"
  install -d -o postfix -g postdrop -m 710 "$q/public"
  install -d -o postfix -g postfix -m 700 "$1/data"
}

start_postfix() {
  local dir=$1
  make_queue "$dir"
  # The configuration must parse without a single warning.
  if ! postconf -c "$dir/postfix" -n >/dev/null 2>"$dir/postconf.err" || [ -s "$dir/postconf.err" ]; then
    cat "$dir/postconf.err" >&2; die "postfix configuration in $dir/postfix is broken"
  fi
  # The queue was just made as postfix-files says: skip `postfix start`'s 2 s
  # integrity check (post-install create-missing, postsuper) via its quick-start
  # flag. master -w still fails the start on a bad master.cf or a busy port.
  touch "$dir/spool/quick-start"
  postfix -c "$dir/postfix" start </dev/null >>"$dir/start.log" 2>&1 \
    || { show_logs "$dir"; die "postfix did not start"; }
  if ! { wait_port "$(env_get "$dir" SMTP_PORT)" && wait_port "$(env_get "$dir" SUBMISSION_PORT)"; }; then
    show_logs "$dir"; die "postfix ports did not open within ${WAIT_SECONDS}s"
  fi
  pid_alive "$dir/spool/pid/master.pid" || { show_logs "$dir"; die "postfix exited after starting"; }
}

stop_postfix() {
  kill_pidfile "$1/spool/pid/master.pid"
}

start() {
  [ $# -eq 5 ] || die "usage: start DIR SMTP_PORT SUBMISSION_PORT IMAP_PORT LMTP_PORT"
  local dir smtp=$2 sub=$3 imap=$4 lmtp=$5 p
  for p in "$smtp" "$sub" "$imap" "$lmtp"; do
    [[ $p =~ ^[0-9]+$ ]] || die "bad port '$p'"
  done
  command -v postfix >/dev/null && command -v dovecot >/dev/null \
    || die "postfix/dovecot not installed: run '$0 install' first"
  mkdir -p "$1"
  dir=$(cd "$1" && pwd)
  # A restart in the same DIR (e.g. a retry with new ports) starts clean.
  stop_postfix "$dir"
  stop_imap "$dir"
  : > "$dir/start.log"
  write_config "$dir" "$smtp" "$sub" "$imap" "$lmtp"
  # Whatever fails from here on leaves nothing running.
  trap 'rc=$?; if [ $rc -ne 0 ]; then stop "$dir"; fi; exit $rc' EXIT
  start_imap "$dir"
  start_postfix "$dir"
  trap - EXIT
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  # Both wind down in parallel (each takes about a second).
  stop_postfix "$dir" &
  stop_imap "$dir"
  wait
}

need_dir() { [ $# -ge 1 ] && [ -n "$1" ] || die "usage: $cmd DIR"; }

cmd=${1:-}
shift || true
case "$cmd" in
  install) do_install ;;
  start) start "$@" ;;
  stop) need_dir "$@"; stop "$1" ;;
  restart-imap) need_dir "$@"; stop_imap "$1"; start_imap "$1" ;;
  stop-imap) need_dir "$@"; stop_imap "$1" ;;
  start-imap) need_dir "$@"; start_imap "$1" ;;
  reload)
    need_dir "$@"
    postfix -c "$1/postfix" reload </dev/null >>"$1/start.log" 2>&1 \
      || { show_logs "$1"; die "postfix reload failed"; }
    # Idle daemons holding the old maps exit on reload; give them a moment.
    sleep 0.3
    ;;
  flush)
    need_dir "$@"
    postqueue -c "$1/postfix" -f </dev/null >>"$1/start.log" 2>&1 \
      || { show_logs "$1"; die "postqueue -f failed"; }
    ;;
  *) die "unknown command '$cmd' (install|start|stop|restart-imap|stop-imap|start-imap|reload|flush)" ;;
esac
