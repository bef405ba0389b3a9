#!/usr/bin/env bash
# Packaging checks: one release build, reused for the Debian package and the
# container image; the alert rules (promtool), the Kubernetes manifests
# (rendered with kustomize, validated against the Kubernetes JSON schemas),
# the .deb installed with dpkg and its unit verified, and the image built and
# run. Installs what it needs when missing (apt-get: prometheus, buildah,
# debootstrap; crates.io: cargo-deb; PyPI: kubernetes-validate into a venv).
# Everything listens on loopback only. Run as root (dpkg, buildah).
#
#   bash scripts/packaging.sh            # everything
#   PACKAGING_SKIP=image,deb bash scripts/packaging.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/postcanary-packaging
mkdir -p "$CACHE"
SKIP=",${PACKAGING_SKIP:-},"
WORK=$(mktemp -d)
CLEANUP=()
cleanup() {
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[i]}" || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

START=$SECONDS
step() { printf '\n== %s (t+%ss)\n' "$1" "$((SECONDS - START))"; }
skip() { [[ $SKIP == *",$1,"* ]]; }
fail() { echo "packaging: $*" >&2; exit 1; }

POLICY=/usr/sbin/policy-rc.d
apt_install() {
  # Never start the services of what we install (prometheus would).
  local created=
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY" && chmod 755 "$POLICY" && created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
  }
  if [ -n "$created" ]; then rm -f "$POLICY"; fi
}

# Every `env:NAME` secret reference of a config file and its includes.
env_refs() { grep -oh '"env:[A-Za-z0-9_]*"' "$@" | tr -d '"' | sed 's/^env://' | sort -u; }
# The VAR names an env file defines.
env_keys() { sed -n 's/^\([A-Za-z0-9_]*\)=.*/\1/p' "$1" | sort -u; }
# An env file's variables, each set to a dummy value (URLs are accepted as any secret).
dummy_env() { sed -n 's|^\([A-Za-z0-9_]*\)=.*|\1=https://secret.invalid/dummy|p' "$1"; }

# ----------------------------------------------------------------- release
step "release build"
nice -n 15 cargo build --release --locked --bin postcanary
BIN=$TARGET/release/postcanary
SIZE=$(stat -c %s "$BIN")
echo "binary: $BIN, $SIZE bytes ($((SIZE / 1024 / 1024)) MiB), $(file -b "$BIN" 2>/dev/null | cut -d, -f1-2)"
"$BIN" --version
"$BIN" schema | diff -u docs/postcanary.schema.json - || fail "docs/postcanary.schema.json is stale: cargo run -- schema > docs/postcanary.schema.json"

# ------------------------------------------------------- files that follow
step "copies that must follow the example config"
K=deploy/kubernetes/base
for f in probes/*.toml; do
  cmp -s "$f" "$K/$f" || fail "$K/$f differs from $f (copy it: kustomize reads only files under the base)"
done
[ "$(ls probes/*.toml | wc -l)" = "$(ls $K/probes/*.toml | wc -l)" ] || fail "$K/probes/ and probes/ hold different files"
for f in probes/*.toml; do grep -q "probes/$(basename "$f")" $K/kustomization.yaml || fail "$K/kustomization.yaml misses probes/$(basename "$f")"; done
head -c "$(stat -c %s postcanary.example.toml)" $K/postcanary.toml | cmp -s - postcanary.example.toml ||
  fail "$K/postcanary.toml must be postcanary.example.toml plus a [server] section"
diff <(env_refs postcanary.example.toml probes/*.toml) <(env_keys deploy/debian/postcanary.env) ||
  fail "deploy/debian/postcanary.env must list exactly the config's env: references"
diff <(env_refs $K/postcanary.toml probes/*.toml) <(env_keys $K/secrets.env) ||
  fail "$K/secrets.env must list exactly the config's env: references"
grep -q "EnvironmentFile=-/etc/postcanary/postcanary.env" deploy/systemd/postcanary.service || fail "unit lost its EnvironmentFile="
echo "ok: kubernetes copies, env templates and unit agree with the example config"
# The Kubernetes config validates with its Secret's keys set.
mkdir -p "$WORK/k8s-config"
cp $K/postcanary.toml "$WORK/k8s-config/" && cp -r $K/probes "$WORK/k8s-config/"
env $(dummy_env $K/secrets.env) "$BIN" validate -c "$WORK/k8s-config/postcanary.toml" >/dev/null
echo "ok: $K/postcanary.toml validates"

# ---------------------------------------------------------------- promtool
step "promtool check rules"
command -v promtool >/dev/null || apt_install prometheus
promtool check rules deploy/prometheus/*.yml

# -------------------------------------------------------------- kubernetes
if ! skip k8s; then
  step "kubernetes: kustomize + kubernetes-validate"
  if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
    apt_install kubectl || fail "neither kubectl nor kustomize is available"
  fi
  kustomize_build() { if command -v kustomize >/dev/null; then kustomize build "$1"; else kubectl kustomize "$1"; fi; }
  KV=$CACHE/kubernetes-validate
  if [ ! -x "$KV/bin/kubernetes-validate" ]; then
    python3 -m venv "$KV"
    "$KV/bin/pip" install -q kubernetes-validate==1.37.0
  fi
  for overlay in deploy/kubernetes/overlays/*/; do
    name=$(basename "$overlay")
    kustomize_build "$overlay" >"$WORK/$name.yaml"
    # Built-in kinds against the Kubernetes 1.37 and 1.30 schemas, unknown
    # properties refused; the ServiceMonitor CRD has no bundled schema and
    # is checked below by hand.
    for v in 1.37.0 1.30.0; do
      "$KV/bin/kubernetes-validate" --strict --quiet -k "$v" "$WORK/$name.yaml" 2>&1 | grep -v "Couldn't find schema for kind ServiceMonitor" || true
      "$KV/bin/kubernetes-validate" --strict --quiet -k "$v" "$WORK/$name.yaml" >/dev/null 2>&1 || fail "overlay $name is invalid for Kubernetes $v"
    done
    "$KV/bin/python" - "$WORK/$name.yaml" "$name" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
def one(kind):
    items = by_kind.get(kind, [])
    assert len(items) == 1, f"expected one {kind}, got {len(items)}"
    return items[0]
dep, svc, sm, pdb = one("Deployment"), one("Service"), one("ServiceMonitor"), one("PodDisruptionBudget")
one("NetworkPolicy")
secret = one("Secret")
assert sm["apiVersion"] == "monitoring.coreos.com/v1"
ports = {p["name"] for p in svc["spec"]["ports"]}
creds = []
for ep in sm["spec"]["endpoints"]:
    assert ep["port"] in ports, f"ServiceMonitor port {ep['port']} not in Service ports {ports}"
    c = ep["authorization"]["credentials"]
    assert c["name"] == secret["metadata"]["name"], "ServiceMonitor names another Secret"
    assert c["key"] in secret.get("data", {}), f"Secret lacks {c['key']}"
sel = sm["spec"]["selector"]["matchLabels"]
assert sel and all(svc["metadata"]["labels"].get(k) == v for k, v in sel.items()), "ServiceMonitor selects no Service"
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
assert pod["securityContext"]["runAsNonRoot"] is True
assert c["securityContext"]["readOnlyRootFilesystem"] is True
assert c["readinessProbe"]["httpGet"]["path"] == "/healthz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert c["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
cms = {d["metadata"]["name"] for d in by_kind["ConfigMap"]}
for v in pod["volumes"]:
    if "configMap" in v:
        assert v["configMap"]["name"] in cms, f"volume {v['name']} names a missing ConfigMap"
ledger = next(v for v in pod["volumes"] if v["name"] == "ledger")
if sys.argv[2] == "sqlite":
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pvcs = {d["metadata"]["name"] for d in by_kind["PersistentVolumeClaim"]}
    assert ledger["persistentVolumeClaim"]["claimName"] in pvcs and "emptyDir" not in ledger
else:
    assert dep["spec"]["replicas"] > 1
print(f"ok: overlay {sys.argv[2]}: {len(docs)} objects; ServiceMonitor port, Secret and selector resolve")
EOF
  done
fi

# ------------------------------------------------------------------- .deb
if ! skip deb; then
  step "debian package: cargo-deb, dpkg -i, systemd-analyze verify"
  if ! cargo deb --version >/dev/null 2>&1; then
    nice -n 15 cargo install --locked cargo-deb
  fi
  DEB=$(nice -n 15 cargo deb --no-build --no-strip --output "$WORK/deb" 2>&1 | tail -n 1)
  [ -f "$DEB" ] || fail "cargo deb did not produce a package: $DEB"
  echo "package: $(basename "$DEB"), $(stat -c %s "$DEB") bytes"
  if dpkg -s postcanary >/dev/null 2>&1; then fail "a postcanary package is already installed here; not touching it"; fi
  had_user=; getent passwd postcanary >/dev/null && had_user=1
  CLEANUP+=("dpkg -P postcanary >/dev/null 2>&1")
  [ -n "$had_user" ] || CLEANUP+=("userdel postcanary >/dev/null 2>&1; groupdel postcanary >/dev/null 2>&1")
  command -v systemd-analyze >/dev/null || apt_install systemd
  dpkg -i "$DEB"
  for f in /usr/bin/postcanary /lib/systemd/system/postcanary.service /etc/postcanary/postcanary.toml \
    /etc/postcanary/probes/kommune.toml /etc/postcanary/probes/forms.toml /etc/postcanary/postcanary.env \
    /usr/share/postcanary/postcanary.schema.json /usr/share/doc/postcanary/LICENSE-APACHE; do
    [ -e "$f" ] || fail "$f not installed"
  done
  [ "$(stat -c '%a %U %G' /etc/postcanary/postcanary.env)" = "640 root postcanary" ] ||
    fail "postcanary.env is $(stat -c '%a %U %G' /etc/postcanary/postcanary.env), want 640 root postcanary"
  [ "$(stat -c '%U %G' /var/lib/postcanary)" = "postcanary postcanary" ] || fail "/var/lib/postcanary not owned by postcanary"
  getent passwd postcanary | grep -q ':/var/lib/postcanary:/usr/sbin/nologin$' || fail "postcanary user: $(getent passwd postcanary)"
  for f in postcanary.toml postcanary.env probes/kommune.toml probes/forms.toml; do
    grep -qx "/etc/postcanary/$f" /var/lib/dpkg/info/postcanary.conffiles || fail "/etc/postcanary/$f is not a conffile"
  done
  systemd-analyze verify /lib/systemd/system/postcanary.service
  echo "ok: systemd-analyze verify"
  # The unit's ExecStartPre, as the service user, with the env file's variables set.
  set +e
  setpriv --reuid postcanary --regid postcanary --init-groups /usr/bin/postcanary validate -c /etc/postcanary/postcanary.toml >/dev/null 2>"$WORK/empty.err"
  rc=$?
  set -e
  [ "$rc" = 2 ] || fail "validate with the empty env file should fail with 2, got $rc"
  grep -q "POSTCANARY_TOKEN_KEY is not set" "$WORK/empty.err" || fail "unexpected error: $(head -3 "$WORK/empty.err")"
  env $(dummy_env /etc/postcanary/postcanary.env) setpriv --reuid postcanary --regid postcanary --init-groups \
    /usr/bin/postcanary validate -c /etc/postcanary/postcanary.toml | tail -n 2
  echo "ok: the installed config validates as user postcanary once the env file's secrets are set"
  dpkg -r postcanary
  [ ! -e /usr/bin/postcanary ] || fail "dpkg -r left /usr/bin/postcanary"
  dpkg -P postcanary >/dev/null
  echo "ok: removed and purged"
fi

# ------------------------------------------------------------------ image
if ! skip image; then
  step "container image: buildah (vfs storage, chroot isolation)"
  command -v buildah >/dev/null || apt_install buildah
  STORE=(--root "$CACHE/containers" --runroot "$WORK/containers-run" --storage-driver vfs)
  B() { buildah "${STORE[@]}" "$@"; }
  # No container registry is reachable from CI: a bookworm base made locally.
  BASE=localhost/postcanary-base:bookworm
  if ! B inspect --type image "$BASE" >/dev/null 2>&1; then
    if [ ! -f "$CACHE/bookworm-minbase.tar" ]; then
      command -v debootstrap >/dev/null || apt_install debootstrap
      debootstrap --variant=minbase --include=passwd bookworm "$WORK/rootfs" http://deb.debian.org/debian >/dev/null
      rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
      tar -C "$WORK/rootfs" -cf "$CACHE/bookworm-minbase.tar" .
      rm -rf "$WORK/rootfs"
    fi
    c=$(B from scratch)
    B add "$c" "$CACHE/bookworm-minbase.tar" /
    B commit -q "$c" "$BASE" >/dev/null
    B rm "$c" >/dev/null
  fi
  # The Dockerfile's runtime stage, line for line, with the host's release
  # binary in place of the build stage's.
  CTX=$WORK/image
  mkdir -p "$CTX/docs"
  cp "$BIN" "$CTX/postcanary"
  cp postcanary.example.toml "$CTX/" && cp -r probes "$CTX/" && cp docs/postcanary.schema.json "$CTX/docs/"
  grep -q '^COPY --from=build /postcanary /usr/bin/postcanary$' Dockerfile || fail "Dockerfile's runtime COPY changed; update packaging.sh"
  sed -n '/^# --- runtime/,$p' Dockerfile | sed 's|^FROM \${RUNTIME_IMAGE}$|FROM '"$BASE"'|; s|^COPY --from=build /postcanary |COPY postcanary |' >"$CTX/Containerfile"
  grep -q "^FROM $BASE\$" "$CTX/Containerfile" || fail "Dockerfile's runtime FROM changed; update packaging.sh"
  IMAGE=localhost/postcanary:ci
  B rmi -f "$IMAGE" >/dev/null 2>&1 || true
  B rmi --prune >/dev/null 2>&1 || true
  B bud -q --format docker --isolation chroot --pull=never -f "$CTX/Containerfile" -t "$IMAGE" "$CTX" >/dev/null
  echo "image: $IMAGE, $(B inspect --type image --format '{{.Docker.Config.User}} {{.Docker.Config.Volumes}} {{.Docker.Config.Entrypoint}}' "$IMAGE")"
  B inspect --type image --format '{{.Docker.Config.User}}' "$IMAGE" | grep -qx '10001:10001' || fail "image does not run as 10001"
  B inspect --type image --format '{{.Docker.Config.Volumes}}' "$IMAGE" | grep -q '/var/lib/postcanary' || fail "no ledger volume"
  HC=$(B inspect --type image "$IMAGE" | python3 -c 'import json, sys; print(json.dumps((json.load(sys.stdin)["Docker"]["config"].get("Healthcheck") or {}).get("Test")))')
  echo "$HC" | grep -q '/healthz' || fail "no /healthz HEALTHCHECK: $HC"
  # Run the image's filesystem as its user. podman/crun cannot run
  # containers here when the machine withholds CAP_SYS_RESOURCE (crun's
  # setrlimit fails), so the image is run through buildah's chroot isolation.
  ctr=$(B from --pull=never "$IMAGE")
  CLEANUP+=("buildah ${STORE[*]} rm $ctr >/dev/null")
  run_in() { B run --isolation chroot --user 10001:10001 "$@"; }
  envs=(); while read -r kv; do envs+=(--env "$kv"); done < <(dummy_env deploy/debian/postcanary.env)
  run_in "${envs[@]}" "$ctr" -- /usr/bin/postcanary validate -c /etc/postcanary/postcanary.toml | tail -n 1
  echo "ok: the image's postcanary validates the example config"
  run_in "$ctr" -- sh -c 'id -u; test -w /var/lib/postcanary' | grep -qx 10001 || fail "ledger dir not writable by the image user"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  setsid buildah "${STORE[@]}" run --isolation chroot --user 10001:10001 "$ctr" -- \
    /usr/bin/postcanary demo --listen "127.0.0.1:$PORT" >"$WORK/demo.log" 2>&1 &
  DEMO=$!
  CLEANUP+=("kill -- -$DEMO 2>/dev/null; wait $DEMO 2>/dev/null")
  ok=
  for _ in $(seq 1 60); do
    if python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' \
      "http://127.0.0.1:$PORT/healthz" >"$WORK/healthz" 2>/dev/null; then ok=1; break; fi
    sleep 1
  done
  [ -n "$ok" ] || { cat "$WORK/demo.log"; fail "the image's demo never answered /healthz on 127.0.0.1:$PORT"; }
  echo "ok: the image's demo answers /healthz: $(head -c 200 "$WORK/healthz")"
  # The HEALTHCHECK command itself, inside the image, pointed at the demo's port.
  hc=$(echo "$HC" | python3 -c 'import json,sys; t=json.load(sys.stdin); print(t[-1])' | sed "s|/127.0.0.1/8080|/127.0.0.1/$PORT|")
  run_in "$ctr" -- bash -c "$hc" || fail "the HEALTHCHECK command fails against a healthy daemon"
  echo "ok: the image's HEALTHCHECK command passes"
  kill -- "-$DEMO" 2>/dev/null || true
  wait "$DEMO" 2>/dev/null || true
fi

step "packaging checks passed"
