#!/usr/bin/env bash
# Container check (issue 10), for CI machines without a Docker engine:
#   1. validates deploy/ (every YAML/JSON parsed, the fields issue 10 lists checked by
#      deploy/check_manifests.py, Kubernetes objects schema-checked with kubernetes-validate,
#      the compose file against the compose spec with check-jsonschema);
#   2. builds the Dockerfile with podman on a local Debian bookworm base (debootstrap, cached
#      under build/container/, imported once as glassbox-base:bookworm);
#   3. mounts the built image and starts glassboxd from it with chroot, as the image's non-root
#      user, on a loopback port with tests/fixtures/models/tiny-gpt2; checks `glassbox models`
#      (the image's HEALTHCHECK command) and one real `glassbox run` with the image's CLI, then
#      SIGTERM and a clean exit 0.
# Prints the image size and the build time. Idempotent; exits non-zero on any failure.
# `podman run` does not work on these machines (rlimit/cgroup restrictions), hence chroot.
#
# Environment: GLASSBOX_JOBS (compile jobs inside the build, default 2),
#              GLASSBOX_SMOKE_SKIP_BUILD=1 (reuse the existing glassbox:ci image).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E bash "$0" "$@"  # podman (rootful), debootstrap, mount and chroot need root
fi

jobs="${GLASSBOX_JOBS:-2}"
work="$root/build/container"
venv="$root/build/deploy-venv"
base=glassbox-base:bookworm
image=glassbox:ci
uid=10001  # the Dockerfile's glassbox user
mkdir -p "$work"

log() { echo "container_smoke: $*"; }
fail() { echo "container_smoke: FAIL: $*" >&2; exit 1; }

# ---------------------------------------------------------------- 1. manifests
log "== validating deploy/"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
  "$venv/bin/pip" install -q pyyaml
fi
if ! "$venv/bin/python" -c 'import grpc_health.v1.health_pb2' 2>/dev/null; then
  "$venv/bin/pip" install -q grpcio grpcio-health-checking  # to probe like the kubelet does
fi
for tool in kubernetes-validate check-jsonschema; do  # bundle their schemas: no network later
  [ -x "$venv/bin/$tool" ] || "$venv/bin/pip" install -q "$tool" || log "$tool unavailable: its schema check is skipped"
done
"$venv/bin/python" deploy/check_manifests.py "$root"
if [ -x "$venv/bin/kubernetes-validate" ]; then
  mapfile -t k8s_files < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | sort)
  "$venv/bin/kubernetes-validate" --strict --quiet "${k8s_files[@]}"
  log "kubernetes-validate --strict: ${#k8s_files[@]} files ok"
fi
if [ -x "$venv/bin/check-jsonschema" ]; then
  "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml >/dev/null
  log "check-jsonschema (compose spec): deploy/docker-compose.yml ok"
fi

# ---------------------------------------------------------------- 2. image
missing=()
for pkg in podman debootstrap; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! podman image exists "$base"; then
  rootfs="$work/rootfs-bookworm"
  if [ ! -d "$rootfs" ]; then
    log "debootstrap --variant=minbase bookworm (cached in $rootfs)"
    rm -rf "$rootfs.tmp"
    debootstrap --variant=minbase bookworm "$rootfs.tmp" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
      || { tail -n 20 "$work/debootstrap.log" >&2; fail "debootstrap"; }
    mv "$rootfs.tmp" "$rootfs"
  fi
  log "importing $base"
  tar -C "$rootfs" --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*_Packages' -c . \
    | podman import -q - "$base" >/dev/null
fi

build_seconds="(skipped)"
if [ "${GLASSBOX_SMOKE_SKIP_BUILD:-0}" != 1 ] || ! podman image exists "$image"; then
  log "== podman build -t $image (jobs $jobs; log: build/container/build.log)"
  start=$(date +%s)
  # --format docker keeps HEALTHCHECK (the OCI image format has no field for it).
  if ! nice podman build --format docker --isolation=chroot --network=host \
      --build-arg BASE="localhost/$base" --build-arg BUILD_BASE="localhost/$base" \
      --build-arg JOBS="$jobs" -t "$image" . >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    fail "podman build"
  fi
  build_seconds="$(( $(date +%s) - start ))s"
fi
size_bytes=$(podman image inspect --format '{{.Size}}' "$image")
log "image $image: $(( size_bytes / 1000000 )) MB; build time $build_seconds"
log "image config: $(podman image inspect --format 'user {{.Config.User}}, stop {{.Config.StopSignal}}, ports {{.Config.ExposedPorts}}' "$image")"
[ "$(podman image inspect --format '{{.Config.User}}' "$image")" = "glassbox:glassbox" ] || fail "image user is not glassbox"
podman image inspect --format '{{.Config.Healthcheck}}' "$image" | grep -q glassbox || fail "image has no HEALTHCHECK"

# ---------------------------------------------------------------- 3. smoke test
log "== smoke test: glassboxd from the image, via chroot"
mnt=""
tmp=""
server_pid=""
mounts=()
cleanup() {
  local rc=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null || true
  done
  [ -n "$mnt" ] && podman image unmount "$image" >/dev/null 2>&1 || true
  [ -n "$tmp" ] && rm -rf "$tmp"
  [ $rc -ne 0 ] && echo "container_smoke: FAILED (exit $rc)" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mnt=$(podman image mount "$image")
# Mounts left over by an earlier run that was killed before its cleanup could run.
awk -v m="$mnt/" 'index($2, m) == 1 {print $2}' /proc/mounts | sort -r | while read -r stale; do
  umount -l "$stale" || true
done
[ -x "$mnt/usr/local/bin/glassboxd" ] && [ -x "$mnt/usr/local/bin/glassbox" ] || fail "binaries missing in the image"
[ ! -e "$mnt/usr/bin/g++" ] && [ ! -e "$mnt/usr/bin/cmake" ] || fail "build tools leaked into the runtime image"
log "runtime packages: $(tr '\n' ' ' <"$mnt/usr/share/glassbox/runtime-packages.txt")"

tmp=$(mktemp -d "$work/smoke.XXXXXX")
mkdir -p "$tmp/etc" "$tmp/models" "$tmp/out"
cp -r tests/fixtures/models/tiny-gpt2 "$tmp/models/"
chmod -R a+rX "$tmp/models" "$tmp/etc"
chmod 1777 "$tmp/out"
cat >"$tmp/etc/config.json" <<'EOF'
{"models": {"tiny-gpt2": "/models/tiny-gpt2"}, "listen": "127.0.0.1:0", "limits": {"max_batch": 8}}
EOF
bind() {  # bind SOURCE TARGET-in-image [ro]
  mount --bind "$1" "$mnt$2"
  mounts+=("$mnt$2")
  [ "${3:-}" = ro ] && mount -o remount,bind,ro "$mnt$2"
  return 0
}
bind "$tmp/etc" /etc/glassbox ro
bind "$tmp/models" /models ro
bind "$tmp/out" /tmp
bind /dev /dev
mount -t proc proc "$mnt/proc"; mounts+=("$mnt/proc")
bind /sys /sys ro

in_image() {  # runs a command inside the image as the glassbox user, with a clean environment
  chroot --userspec="$uid:$uid" "$mnt" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/nonexistent "$@"
}

# Not via in_image: a backgrounded function would be a subshell, and SIGTERM must reach
# glassboxd itself (chroot and env exec it, so $! is its pid).
chroot --userspec="$uid:$uid" "$mnt" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/nonexistent \
  glassboxd --config /etc/glassbox/config.json >"$tmp/server.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 1 600); do
  port=$(sed -n 's/^glassboxd: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/server.log")
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log" >&2; fail "glassboxd exited before listening"; }
  sleep 0.1
done
[ -n "$port" ] || { cat "$tmp/server.log" >&2; fail "glassboxd did not log 'listening on' within 60 s"; }
log "glassboxd (pid $server_pid, uid $uid) listening on 127.0.0.1:$port"

# The image's HEALTHCHECK command.
models=$(in_image glassbox --server "127.0.0.1:$port" --timeout 10s models) \
  || { cat "$tmp/server.log" >&2; fail "glassbox models"; }
echo "$models" | sed 's/^/  /'
echo "$models" | grep -q tiny-gpt2 || fail "tiny-gpt2 not listed by glassbox models"

# What the Kubernetes probes ask: the standard grpc.health.v1 service, "" and the service name.
"$venv/bin/python" - "127.0.0.1:$port" <<'EOF' || fail "gRPC health check"
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(sys.argv[1]))
for service in ("", "glassbox.v1.Glassbox"):
    status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING, (service, status)
print("  grpc.health.v1 Check: SERVING for \"\" and glassbox.v1.Glassbox")
EOF

in_image glassbox --server "127.0.0.1:$port" --timeout 60s run --model tiny-gpt2 --tokens 1,2,3 \
    --capture blocks.0.hook_resid_post --out /tmp/x.safetensors >"$tmp/run.out" 2>&1 \
  || { cat "$tmp/run.out" "$tmp/server.log" >&2; fail "glassbox run"; }
sed 's/^/  /' "$tmp/run.out"
"$venv/bin/python" - "$tmp/out/x.safetensors" <<'EOF' || fail "the run's safetensors output is wrong"
import json, struct, sys
data = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", data[:8])
header = json.loads(data[8:8 + n])
tensor = header["blocks.0.hook_resid_post"]
assert tensor["shape"][:2] == [1, 3], tensor
print(f"  x.safetensors: blocks.0.hook_resid_post {tensor['dtype']} {tensor['shape']}")
EOF

kill -TERM "$server_pid"
server_rc=0
wait "$server_pid" || server_rc=$?
server_pid=""
grep -q "draining" "$tmp/server.log" || { cat "$tmp/server.log" >&2; fail "no drain on SIGTERM"; }
[ "$server_rc" -eq 0 ] || { cat "$tmp/server.log" >&2; fail "glassboxd exited $server_rc after SIGTERM"; }
log "SIGTERM: drained, exit 0"
# Build-stage leftovers of older builds (untagged, over a week old) would fill the disk run
# after run; recent ones stay, as the layer cache.
podman image prune -f --filter until=168h >/dev/null 2>&1 || true
log "ok: image $image $(( size_bytes / 1000000 )) MB, build $build_seconds, served a run from inside the image"
