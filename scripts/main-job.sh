#!/usr/bin/env bash
# The main job, end to end on this machine with no internet but Debian's apt
# mirror: build a small image from the host's busybox-static, push it to a
# real OCI registry on 127.0.0.1, then `vessel run` it: Vessel pulls and
# converts the image, fetches the Debian cloud kernel on first use, boots a
# microVM (KVM when it works, else TCG) and runs a command in it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export VESSEL_DATA_DIR="${VESSEL_DATA_DIR:-/var/lib/vessel}"
work=$(mktemp -d)
reg_pid=""
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A registry of our own, on loopback only, with storage in a temp dir.
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cat > "$work/registry.yml" <<YML
version: 0.1
log: { level: warn, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $work/registry }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$port }
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
  sleep 0.1
done

# A busybox image: one static binary plus its applet links.
umoci init --layout "$work/layout" >/dev/null
umoci new --image "$work/layout:demo" >/dev/null
umoci unpack --rootless --image "$work/layout:demo" "$work/bundle" >/dev/null 2>&1
mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/etc" "$work/bundle/rootfs/tmp"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for applet in sh echo ls cat uname; do ln -sf busybox "$work/bundle/rootfs/bin/$applet"; done
echo "root:x:0:0:root:/root:/bin/sh" > "$work/bundle/rootfs/etc/passwd"
umoci repack --image "$work/layout:demo" "$work/bundle" >/dev/null
umoci config --image "$work/layout:demo" --config.cmd /bin/sh --config.env PATH=/bin >/dev/null
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$work/layout:demo" "docker://127.0.0.1:$port/demo/busybox:1"

ref="127.0.0.1:$port/demo/busybox:1"
echo "+ vessel image pull $ref"
node bin/vessel.js image pull "$ref"
echo "+ vessel run --rm $ref -- sh -c 'echo hello from a microVM; uname -r'"
node bin/vessel.js run --rm "$ref" -- sh -c 'echo hello from a microVM; uname -r'
