#!/usr/bin/env bash
# Test beds for the compliance evidence (tests/compliance_e2e.rs): real MTAs
# and milters that write the Received and Authentication-Results lines
# postcanary judges, all on loopback, from temp dirs.
#
#   beds.sh install                       fetch OpenDMARC (+ libopendmarc2, libspf2-2) and Exim
#                                         (exim4-daemon-light) with `apt-get download` into
#                                         $COMPLIANCE_CACHE (default /var/cache/postcanary-compliance) and
#                                         extract them with `dpkg -x`; nothing is installed, no service started
#   beds.sh relay-start DIR PORT NEXT TLS a relay Postfix (myhostname relay.kommune.example) taking mail from
#                                         loopback on 127.0.0.1:PORT and relaying all of it to 127.0.0.1:NEXT;
#                                         TLS = encrypt (STARTTLS required) or none (a plaintext hop)
#   beds.sh relay-set DIR TLS [NEXT]      change the relay's TLS (and next hop) and reload it
#   beds.sh exim-start DIR PORT NEXT      Exim (exim.kommune.example) on 127.0.0.1:PORT, offering STARTTLS,
#                                         relaying everything to 127.0.0.1:NEXT with TLS required
#   beds.sh milters-start DIR DKIM DMARC DNSIP
#                                         dnsmasq on DNSIP:53 with example.net's SPF and DMARC records,
#                                         OpenDKIM (verify) on 127.0.0.1:DKIM and OpenDMARC (SPF self-check)
#                                         on 127.0.0.1:DMARC, both as authserv-id mx.kommune.example; makes
#                                         the DKIM key DIR/dkim/rsa.pem (selector pc2025, domain example.net)
#   beds.sh stop DIR                      stop whatever of these runs from DIR (idempotent)
#
# Exim and OpenDMARC run from the extracted tree: Exim's package conflicts
# with Postfix, and OpenDMARC's pulls in a database client. Both run in a
# private mount namespace (`unshare -m`): Exim sees a passwd with the
# compiled-in `Debian-exim` user (mapped to uid `mail`), OpenDMARC an
# /etc/resolv.conf naming the private dnsmasq (it has no resolver option).
set -euo pipefail

CACHE=${COMPLIANCE_CACHE:-/var/cache/postcanary-compliance}
DEBS="opendmarc libopendmarc2 libspf2-2 exim4-daemon-light"
WAIT_SECONDS=20

die() { echo "beds: $*" >&2; exit 1; }

# ---------------------------------------------------------------- install

installed() {
  [ -x "$CACHE/root/usr/sbin/opendmarc" ] && [ -x "$CACHE/root/usr/sbin/exim4" ] \
    && [ -f "$CACHE/root/usr/lib/x86_64-linux-gnu/libopendmarc.so.2" ] || return 1
  [ -x /usr/sbin/opendkim ] && command -v dnsmasq >/dev/null && command -v postfix >/dev/null \
    && [ -f /usr/share/publicsuffix/public_suffix_list.dat ]
}

do_install() {
  installed && return 0
  command -v apt-get >/dev/null || die "apt-get not found"
  command -v unshare >/dev/null || die "unshare (util-linux) not found"
  if [ ! -f /usr/share/publicsuffix/public_suffix_list.dat ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends publicsuffix >/dev/null 2>&1 || {
      apt-get update -q >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends publicsuffix >/dev/null \
        || die "apt-get install publicsuffix failed"
    }
  fi
  local tmp d
  tmp=$(mktemp -d)
  # shellcheck disable=SC2086
  (cd "$tmp" && apt-get download $DEBS >/dev/null 2>&1) || {
    apt-get update -q >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    (cd "$tmp" && apt-get download $DEBS >/dev/null) || { rm -rf "$tmp"; die "apt-get download $DEBS failed"; }
  }
  rm -rf "$CACHE.new"
  mkdir -p "$CACHE.new/root"
  for d in "$tmp"/*.deb; do dpkg -x "$d" "$CACHE.new/root"; done
  (cd "$tmp" && ls ./*.deb) > "$CACHE.new/debs.txt"
  rm -rf "$tmp" "$CACHE"
  mv "$CACHE.new" "$CACHE"
  installed || die "still incomplete in $CACHE after extracting (opendkim, dnsmasq and postfix come from scripts/test.sh)"
}

# ---------------------------------------------------------------- helpers

wait_port() { # port [host]
  local i
  for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
    if (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

running() {
  local _pid _comm state
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
  { read -r _pid _comm state _ < "/proc/$1/stat"; } 2>/dev/null || return 1
  [ "$state" != Z ] && [ "$state" != X ]
}

kill_pidfile() { # pidfile: TERM, then KILL
  local pidfile=$1 pid i
  [ -f "$pidfile" ] || return 0
  pid=$(head -n 1 "$pidfile" | tr -d ' ')
  if running "$pid"; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
}

traverse() { # make every parent of DIR traversable by the postfix and mail users
  local p=$1
  while [ "$p" != "/" ]; do chmod o+x "$p" 2>/dev/null || true; p=$(dirname "$p"); done
}

check_port() { [[ $1 =~ ^[0-9]+$ ]] || die "bad port '$1'"; }

# ---------------------------------------------------------------- relay Postfix

relay_tls_settings() { # TLS
  case "$1" in
    encrypt) echo "smtp_tls_security_level = encrypt" ;;
    none) echo "smtp_tls_security_level = none" ;;
    *) die "TLS must be encrypt or none, not '$1'" ;;
  esac
}

relay_start() {
  [ $# -eq 4 ] || die "usage: relay-start DIR PORT NEXT TLS"
  local dir port=$2 next=$3 tls=$4 q d
  check_port "$port"; check_port "$next"
  mkdir -p "$1/relay"
  dir=$(cd "$1" && pwd)
  traverse "$dir"
  kill_pidfile "$dir/relay/spool/pid/master.pid"
  q=$dir/relay/spool
  install -d -o root -g root -m 755 "$q" "$q/pid"
  for d in active bounce corrupt defer deferred flush hold incoming private saved trace; do
    install -d -o postfix -g root -m 700 "$q/$d"
  done
  install -d -o postfix -g postdrop -m 730 "$q/maildrop"
  install -d -o postfix -g postdrop -m 710 "$q/public"
  install -d -o postfix -g postfix -m 700 "$dir/relay/data"
  {
    cat <<CF
compatibility_level = 3.6
queue_directory = $q
data_directory = $dir/relay/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.kommune.example
mydomain = kommune.example
myorigin = kommune.example
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$next
smtputf8_enable = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
smtp_tls_protocols = >=TLSv1.2
biff = no
in_flow_delay = 0s
smtpd_error_sleep_time = 0s
service_throttle_time = 1s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
maillog_file = $dir/relay/maillog
maillog_file_prefixes = $dir
CF
    relay_tls_settings "$tls"
  } > "$dir/relay/main.cf"
  cat > "$dir/relay/master.cf" <<CF
127.0.0.1:$port inet n - n - - smtpd
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
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
CF
  if ! postconf -c "$dir/relay" -n >/dev/null 2>"$dir/relay/postconf.err" || [ -s "$dir/relay/postconf.err" ]; then
    cat "$dir/relay/postconf.err" >&2; die "relay configuration is broken"
  fi
  touch "$q/quick-start"
  postfix -c "$dir/relay" start </dev/null >>"$dir/relay/start.log" 2>&1 \
    || { tail -n 20 "$dir/relay/start.log" "$dir/relay/maillog" >&2 2>/dev/null; die "relay postfix did not start"; }
  wait_port "$port" || { tail -n 20 "$dir/relay/maillog" >&2 2>/dev/null; die "relay port $port did not open"; }
}

relay_set() {
  [ $# -ge 2 ] || die "usage: relay-set DIR TLS [NEXT]"
  local dir=$1 tls=$2
  [ -f "$dir/relay/main.cf" ] || die "no relay in $dir"
  postconf -c "$dir/relay" -e "$(relay_tls_settings "$tls" | tr -d ' ')"
  if [ $# -ge 3 ]; then
    check_port "$3"
    postconf -c "$dir/relay" -e "relayhost=[127.0.0.1]:$3"
  fi
  postfix -c "$dir/relay" reload </dev/null >>"$dir/relay/start.log" 2>&1 || die "relay reload failed"
  # Idle smtp clients holding the old settings exit on reload; give them a moment.
  sleep 0.5
}

# ---------------------------------------------------------------- Exim

exim_start() {
  [ $# -eq 3 ] || die "usage: exim-start DIR PORT NEXT"
  local dir port=$2 next=$3 e
  check_port "$port"; check_port "$next"
  installed || die "not installed: run '$0 install' first"
  mkdir -p "$1/exim"
  dir=$(cd "$1" && pwd)
  e=$dir/exim
  traverse "$dir"
  kill_pidfile "$e/exim.pid"
  mkdir -p "$e/spool" "$e/log"
  chown -R mail:mail "$e/spool" "$e/log"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=exim.kommune.example -keyout "$e/key.pem" -out "$e/cert.pem" >/dev/null 2>&1 \
    || die "openssl could not make Exim's certificate"
  chmod 644 "$e/key.pem" "$e/cert.pem"
  cp /etc/passwd "$e/passwd"
  cp /etc/group "$e/group"
  echo "Debian-exim:x:$(id -u mail):$(id -g mail)::/nonexistent:/usr/sbin/nologin" >> "$e/passwd"
  echo "Debian-exim:x:$(id -g mail):" >> "$e/group"
  cat > "$e/exim.conf" <<CF
primary_hostname = exim.kommune.example
exim_path = $CACHE/root/usr/sbin/exim4
exim_user = mail
exim_group = mail
never_users =
keep_environment =
spool_directory = $e/spool
log_file_path = $e/log/%slog
pid_file_path = $e/exim.pid
daemon_smtp_ports = $port
local_interfaces = 127.0.0.1
host_lookup =
rfc1413_hosts =
tls_advertise_hosts = *
tls_certificate = $e/cert.pem
tls_privatekey = $e/key.pem
acl_smtp_rcpt = acl_check_rcpt
queue_run_max = 1

begin acl
acl_check_rcpt:
  accept hosts = 127.0.0.1
  deny

begin routers
to_mx:
  driver = manualroute
  route_list = * 127.0.0.1
  transport = remote_smtp
  self = send

begin transports
remote_smtp:
  driver = smtp
  port = $next
  hosts_require_tls = *
  allow_localhost

begin retry
* * F,1h,2s
CF
  chmod 644 "$e/exim.conf"
  # -bd: the daemon; -q2s: retry deferred mail every 2 s. It forks into the background.
  unshare -m sh -c 'mount --bind "$1/passwd" /etc/passwd && mount --bind "$1/group" /etc/group && exec "$2" -C "$1/exim.conf" -bd -q2s' \
    sh "$e" "$CACHE/root/usr/sbin/exim4" </dev/null >>"$e/start.log" 2>&1 \
    || { cat "$e/start.log" "$e/log/paniclog" >&2 2>/dev/null; die "exim did not start"; }
  wait_port "$port" || { cat "$e/start.log" "$e/log/mainlog" "$e/log/paniclog" >&2 2>/dev/null; die "exim port $port did not open"; }
}

# ---------------------------------------------------------------- milters and DNS

milters_start() {
  [ $# -eq 4 ] || die "usage: milters-start DIR DKIM DMARC DNSIP"
  local dir dkim=$2 dmarc=$3 ip=$4 m
  check_port "$dkim"; check_port "$dmarc"
  [[ $ip =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "DNSIP must be a loopback address, not '$ip'"
  installed || die "not installed: run '$0 install' first"
  mkdir -p "$1/milters"
  dir=$(cd "$1" && pwd)
  m=$dir/milters
  milters_stop "$dir"
  mkdir -p "$dir/dkim"
  openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:2048 -out "$dir/dkim/rsa.pem" 2>/dev/null \
    || die "openssl could not make the DKIM key"
  local public
  public=$(openssl pkey -in "$dir/dkim/rsa.pem" -pubout -outform DER | base64 -w0)
  echo "pc2025._domainkey.example.net v=DKIM1; k=rsa; p=$public" > "$m/keys"
  # The private DNS: example.net's SPF (the relay and Exim send from loopback) and DMARC policy.
  cat > "$m/dnsmasq.conf" <<CF
txt-record=example.net,"v=spf1 ip4:127.0.0.0/8 -all"
txt-record=_dmarc.example.net,"v=DMARC1; p=reject; adkim=r; aspf=r"
local=/example.net/
local=/kommune.example/
CF
  dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll --bind-interfaces \
    --listen-address="$ip" --port=53 --user=root --cache-size=0 --pid-file= \
    --conf-file="$m/dnsmasq.conf" --log-facility="$m/dnsmasq.log" </dev/null >>"$m/start.log" 2>&1 &
  echo $! > "$m/dnsmasq.pid"
  wait_port 53 "$ip" || { cat "$m/start.log" >&2; die "dnsmasq did not listen on $ip:53"; }
  printf 'nameserver %s\noptions timeout:1 attempts:2\n' "$ip" > "$m/resolv.conf"

  cat > "$m/opendkim.conf" <<CF
Mode v
Socket inet:$dkim@127.0.0.1
TestPublicKeys $m/keys
AuthservID mx.kommune.example
Syslog no
Background no
PidFile $m/opendkim.pid.unused
CF
  /usr/sbin/opendkim -f -x "$m/opendkim.conf" </dev/null >>"$m/opendkim.log" 2>&1 &
  echo $! > "$m/opendkim.pid"

  # OpenDMARC ignores 127.0.0.1 by default; every peer here is loopback.
  echo "192.0.2.255" > "$m/ignore-hosts"
  cat > "$m/opendmarc.conf" <<CF
Socket inet:$dmarc@127.0.0.1
AuthservID mx.kommune.example
TrustedAuthservIDs mx.kommune.example
IgnoreHosts $m/ignore-hosts
SPFSelfValidate true
PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat
RequiredHeaders false
FailureReports false
RejectFailures false
Syslog false
Background false
PidFile $m/opendmarc.pid.unused
CF
  unshare -m sh -c 'mount --bind "$1/resolv.conf" /etc/resolv.conf && LD_LIBRARY_PATH="$2/usr/lib/x86_64-linux-gnu:$2/usr/lib" exec "$2/usr/sbin/opendmarc" -f -c "$1/opendmarc.conf"' \
    sh "$m" "$CACHE/root" </dev/null >>"$m/opendmarc.log" 2>&1 &
  echo $! > "$m/opendmarc.pid"
  wait_port "$dkim" || { cat "$m/opendkim.log" >&2; die "opendkim did not listen on $dkim"; }
  wait_port "$dmarc" || { cat "$m/opendmarc.log" >&2; die "opendmarc did not listen on $dmarc"; }
}

milters_stop() {
  local m=$1/milters
  kill_pidfile "$m/opendmarc.pid"
  kill_pidfile "$m/opendkim.pid"
  kill_pidfile "$m/dnsmasq.pid"
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  if [ -f "$dir/relay/main.cf" ]; then
    postfix -c "$dir/relay" stop >/dev/null 2>&1 || true
    kill_pidfile "$dir/relay/spool/pid/master.pid"
  fi
  kill_pidfile "$dir/exim/exim.pid"
  milters_stop "$dir"
}

cmd=${1:-}
shift || true
case "$cmd" in
  install) do_install ;;
  relay-start) relay_start "$@" ;;
  relay-set) relay_set "$@" ;;
  exim-start) exim_start "$@" ;;
  milters-start) milters_start "$@" ;;
  stop) [ $# -ge 1 ] || die "usage: stop DIR"; stop "$1" ;;
  *) die "unknown command '$cmd' (install|relay-start|relay-set|exim-start|milters-start|stop)" ;;
esac
