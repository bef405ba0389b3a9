#!/usr/bin/env bash
# A second real IMAP server for postcanary's tests: Debian's Courier IMAP,
# fed by a private Postfix that delivers into its Maildirs.
#
#   otherimap.sh install                start nothing; fetch Courier's .debs with `apt-get download` into
#                                       $OTHERIMAP_CACHE (default /var/cache/postcanary-otherimap), extract
#                                       them with `dpkg -x`, install the plain libraries they link (apt-get)
#   otherimap.sh start DIR SMTP IMAP    start Postfix (SMTP on 127.0.0.1:SMTP, virtual delivery into
#                                       DIR/mail/<user>/Maildir/) and Courier (IMAP on 127.0.0.1:IMAP)
#   otherimap.sh stop DIR               stop both (idempotent)
#   otherimap.sh stop-imap DIR | start-imap DIR
#
# Courier's packages conflict with Dovecot (both provide imap-server), so they
# are never installed: the extracted tree runs in a private mount namespace
# (`unshare -m`) in which /usr and /etc are read-only overlays of the system's
# with the extracted files on top, and /etc/courier and /run/courier are bind
# mounts of DIR/courier/etc and DIR/courier/run (authlib's config, userdb and
# socket paths are compiled in). Nothing outside DIR changes and no system
# service is started. Courier runs with Debian's default imapd settings
# (IMAP_ENHANCEDIDLE=0, IMAP_IDLE_TIMEOUT=60: IDLE is advertised, new mail is
# noticed only every 60 s or when the client sends a command); only the
# address, port, pid file and per-IP limit are changed.
#
# Layout of DIR: env (SMTP_PORT, IMAP_PORT, PASS_<user>), postfix/ (main.cf,
# master.cf, vmailbox, maillog), spool/, data/, courier/etc (authdaemonrc,
# imapd, userdb, userdb.dat), courier/run (authdaemon socket), courier/*.pid,
# courier/*.log, mail/<user>/Maildir/ (folders .Junk and .Postcanary made).
# Mailboxes of kommune.example: social, borger, canary; every other recipient
# is refused at RCPT time.
set -euo pipefail

USERS="social borger canary"
CACHE=${OTHERIMAP_CACHE:-/var/cache/postcanary-otherimap}
# Courier IMAP and the parts of authlib it needs; the versions are Debian's.
DEBS="courier-imap courier-base courier-authdaemon courier-authlib courier-authlib-userdb libcourier-unicode4 libgamin0 gamin"
# Libraries they link that do not conflict with anything: installed normally.
LIBS="libidn12 libltdl7 libpcre3 libgdbm6 libgnutls30 perl"
WAIT_SECONDS=20
MAIL_USER=mail

die() { echo "otherimap: $*" >&2; exit 1; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2068
  apt-get install -y -q --no-install-recommends $@ >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1 || true
    # shellcheck disable=SC2068
    apt-get install -y -q --no-install-recommends $@ >/dev/null || die "apt-get install $* failed"
  }
}

installed() {
  [ -x "$CACHE/root/usr/bin/imapd" ] && [ -x "$CACHE/root/usr/lib/courier/courier/imaplogin" ] \
    && [ -x "$CACHE/root/usr/lib/courier/courier-authlib/authdaemond" ] \
    && [ -f "$CACHE/root/usr/lib/courier-authlib/libauthuserdb.so.0" ] && [ -x "$CACHE/root/usr/libexec/gam_server" ] || return 1
  local p
  for p in $LIBS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
  done
  command -v postfix >/dev/null || return 1
}

do_install() {
  installed && return 0
  command -v apt-get >/dev/null || die "apt-get not found: cannot fetch Courier IMAP"
  command -v unshare >/dev/null || die "unshare (util-linux) not found"
  command -v postfix >/dev/null || die "postfix missing: run tests/mailstack/mailstack.sh install first"
  apt_install $LIBS
  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2086
  (cd "$tmp" && apt-get download $DEBS >/dev/null 2>&1) || {
    apt-get update -q >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    (cd "$tmp" && apt-get download $DEBS >/dev/null) || { rm -rf "$tmp"; die "apt-get download $DEBS failed"; }
  }
  rm -rf "$CACHE.new"
  mkdir -p "$CACHE.new/root"
  local d
  for d in "$tmp"/*.deb; do dpkg -x "$d" "$CACHE.new/root"; done
  (cd "$tmp" && ls ./*.deb) > "$CACHE.new/debs.txt"
  rm -rf "$tmp" "$CACHE"
  mv "$CACHE.new" "$CACHE"
  installed || die "Courier still incomplete in $CACHE after extracting"
}

# ---------------------------------------------------------------- helpers

wait_port() {
  local i
  for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

env_get() { sed -n "s/^$2=//p" "$1/env"; }

running() {
  local _pid _comm state
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
  { read -r _pid _comm state _ < "/proc/$1/stat"; } 2>/dev/null || return 1
  [ "$state" != Z ] && [ "$state" != X ]
}

session_alive() { ps -o stat= -s "$1" 2>/dev/null | grep -qv '^[ZX]'; }

kill_pidfile() { # pidfile: TERM, then KILL what is left of its session
  local pidfile=$1 pid i
  [ -f "$pidfile" ] || return 0
  pid=$(head -n 1 "$pidfile" | tr -d ' ')
  if running "$pid"; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do running "$pid" || break; sleep 0.1; done
  fi
  if [ -n "$pid" ] && session_alive "$pid"; then
    kill -9 -- "-$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do session_alive "$pid" || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
}

show_logs() {
  local dir=$1 f
  for f in "$dir/start.log" "$dir/postfix/maillog" "$dir/courier/authdaemond.log" "$dir/courier/imapd.log"; do
    echo "---- $f" >&2; tail -n 30 "$f" >&2 2>/dev/null || true
  done
}

# ---------------------------------------------------------------- config

write_config() {
  local dir=$1 smtp=$2 imap=$3
  mkdir -p "$dir/postfix" "$dir/mail" "$dir/courier/etc" "$dir/courier/run/authdaemon"
  chmod 755 "$dir" "$dir/postfix" "$dir/courier" "$dir/courier/etc"
  local p=$dir
  while [ "$p" != "/" ]; do chmod o+x "$p" 2>/dev/null || true; p=$(dirname "$p"); done
  local mail_uid mail_gid
  mail_uid=$(id -u "$MAIL_USER")
  mail_gid=$(id -g "$MAIL_USER")
  { echo "SMTP_PORT=$smtp"; echo "IMAP_PORT=$imap"; } > "$dir/env"

  : > "$dir/postfix/vmailbox"
  : > "$dir/courier/etc/userdb"
  local u pw hash
  for u in $USERS; do
    pw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "PASS_$u=$pw" >> "$dir/env"
    echo "$u@kommune.example $u/Maildir/" >> "$dir/postfix/vmailbox"
    hash=$(openssl passwd -6 "$pw")
    printf '%s\tuid=%s|gid=%s|home=%s|mail=%s|systempw=%s\n' \
      "$u" "$mail_uid" "$mail_gid" "$dir/mail/$u" "$dir/mail/$u/Maildir" "$hash" >> "$dir/courier/etc/userdb"
    # The Maildir and two folders, as maildirmake makes them (Courier keeps folders as .Name below INBOX).
    local m=$dir/mail/$u/Maildir f
    for f in "$m" "$m/.Junk" "$m/.Postcanary"; do mkdir -p "$f/new" "$f/cur" "$f/tmp"; done
    touch "$m/.Junk/maildirfolder" "$m/.Postcanary/maildirfolder"
    printf 'INBOX.Junk\nINBOX.Postcanary\n' > "$m/courierimapsubscribed"
  done
  chmod 600 "$dir/courier/etc/userdb"
  chown -R "$MAIL_USER:$MAIL_USER" "$dir/mail"

  cat > "$dir/courier/etc/authdaemonrc" <<CF
authmodulelist="authuserdb"
authmodulelistorig="authuserdb"
daemons=3
authdaemonvar=/run/courier/authdaemon
DEBUG_LOGIN=0
DEFAULTOPTIONS=""
LOGGEROPTS=""
CF
  # Debian's imapd settings as shipped, with our address, port and pid file.
  sed -e 's/^ADDRESS=.*/ADDRESS=127.0.0.1/' -e "s/^PORT=.*/PORT=$imap/" \
      -e "s|^PIDFILE=.*|PIDFILE=$dir/courier/imapd.pid|" -e 's/^MAXPERIP=.*/MAXPERIP=100/' \
      "$CACHE/root/etc/courier/imapd" > "$dir/courier/etc/imapd"
  cp "$CACHE/root/etc/courier/imapd-ssl" "$dir/courier/etc/imapd-ssl"

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
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = reject_unlisted_recipient
unknown_virtual_mailbox_reject_code = 550
virtual_mailbox_domains = kommune.example
virtual_mailbox_maps = texthash:$dir/postfix/vmailbox
virtual_mailbox_base = $dir/mail
virtual_uid_maps = static:$mail_uid
virtual_gid_maps = static:$mail_gid
virtual_minimum_uid = $mail_uid
virtual_transport = virtual
smtputf8_enable = no
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
biff = no
in_flow_delay = 0s
smtpd_error_sleep_time = 0s
service_throttle_time = 1s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
maillog_file = $dir/postfix/maillog
maillog_file_prefixes = $dir
smtpd_banner = \$myhostname ESMTP postcanary-test
CF
  cat > "$dir/postfix/master.cf" <<CF
127.0.0.1:$smtp inet n - n - - smtpd
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
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
CF
}

# ---------------------------------------------------------------- start/stop

# Runs "$@" inside a new private mount namespace in which the extracted
# Courier tree is laid over /usr and DIR's config over /etc/courier.
in_courier_ns() { # dir cmd...
  local dir=$1; shift
  local stub=$dir/courier/stub
  mkdir -p "$stub/etc/courier" "$stub/run/courier"
  unshare -m --propagation private /bin/sh -c '
    set -e
    stub=$1; cache=$2; dir=$3; shift 3
    mount -t overlay overlay -o "lowerdir=$cache/root/usr:/usr" /usr
    mount -t overlay overlay -o "lowerdir=$stub/etc:/etc" /etc
    mount --bind "$dir/courier/etc" /etc/courier
    mount -t overlay overlay -o "lowerdir=$stub/run:/run" /run
    mount --bind "$dir/courier/run" /run/courier
    exec "$@"
  ' sh "$stub" "$CACHE" "$dir" "$@"
}

start_imap() {
  local dir=$1 imap
  [ -f "$dir/courier/etc/imapd" ] || die "no Courier in $dir"
  imap=$(env_get "$dir" IMAP_PORT)
  # The userdb database authlib reads (makeuserdb runs makedatprog at its compiled-in path).
  in_courier_ns "$dir" /usr/sbin/makeuserdb >>"$dir/start.log" 2>&1 || { show_logs "$dir"; die "makeuserdb failed"; }
  chmod 700 "$dir/courier/run/authdaemon"
  # authdaemond stays in the foreground; each daemon leads its own session.
  in_courier_ns "$dir" /usr/bin/setsid /bin/sh -c '
    set -a; . /etc/courier/authdaemonrc; set +a
    echo $$ > "$1/courier/authdaemond.pid"
    exec /usr/lib/courier/courier-authlib/authdaemond
  ' sh "$dir" </dev/null >>"$dir/courier/authdaemond.log" 2>&1 &
  local i
  for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
    [ -S "$dir/courier/run/authdaemon/socket" ] && break
    sleep 0.1
  done
  [ -S "$dir/courier/run/authdaemon/socket" ] || { show_logs "$dir"; die "authdaemond did not open its socket"; }
  in_courier_ns "$dir" /usr/bin/setsid /usr/bin/env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin /bin/sh -c '
    set -a; . /etc/courier/imapd-ssl; . /etc/courier/imapd; set +a
    IMAP_STARTTLS=NO
    echo $$ > "$1/courier/couriertcpd.pid"
    umask "$IMAP_UMASK"
    exec /usr/sbin/couriertcpd -address="$ADDRESS" -maxprocs="$MAXDAEMONS" -maxperip="$MAXPERIP" \
      $TCPDOPTS "$PORT" /usr/lib/courier/courier/imaplogin /usr/bin/imapd "$MAILDIRPATH"
  ' sh "$dir" </dev/null >>"$dir/courier/imapd.log" 2>&1 &
  wait_port "$imap" || { show_logs "$dir"; die "Courier IMAP did not open port $imap within ${WAIT_SECONDS}s"; }
}

stop_imap() {
  kill_pidfile "$1/courier/couriertcpd.pid"
  kill_pidfile "$1/courier/authdaemond.pid"
  rm -f "$1/courier/run/authdaemon/socket"
}

make_queue() {
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
  if ! postconf -c "$dir/postfix" -n >/dev/null 2>"$dir/postconf.err" || [ -s "$dir/postconf.err" ]; then
    cat "$dir/postconf.err" >&2; die "postfix configuration in $dir/postfix is broken"
  fi
  touch "$dir/spool/quick-start"
  postfix -c "$dir/postfix" start </dev/null >>"$dir/start.log" 2>&1 || { show_logs "$dir"; die "postfix did not start"; }
  wait_port "$(env_get "$dir" SMTP_PORT)" || { show_logs "$dir"; die "postfix port did not open"; }
}

stop_postfix() { kill_pidfile "$1/spool/pid/master.pid"; }

start() {
  [ $# -eq 3 ] || die "usage: start DIR SMTP_PORT IMAP_PORT"
  local dir smtp=$2 imap=$3 p
  for p in "$smtp" "$imap"; do [[ $p =~ ^[0-9]+$ ]] || die "bad port '$p'"; done
  installed || die "Courier is not extracted in $CACHE: run '$0 install' first"
  mkdir -p "$1"
  dir=$(cd "$1" && pwd)
  stop "$dir"
  : > "$dir/start.log"
  write_config "$dir" "$smtp" "$imap"
  trap 'rc=$?; if [ $rc -ne 0 ]; then stop "$dir"; fi; exit $rc' EXIT
  start_imap "$dir"
  start_postfix "$dir"
  trap - EXIT
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
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
  stop-imap) need_dir "$@"; stop_imap "$1" ;;
  start-imap) need_dir "$@"; start_imap "$1" ;;
  *) die "unknown command '$cmd' (install|start|stop|stop-imap|start-imap)" ;;
esac
