#!/usr/bin/env bash
# Installs what Vessel needs on a fresh Debian 12 machine, idempotently:
# system packages (only the missing ones), npm dependencies, and the build.
# Never starts the docker-registry system service: tests run their own
# registry bound to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  qemu-system-x86   # the hypervisor (microvm machine; KVM or TCG)
  qemu-utils        # qemu-img
  erofs-utils       # mkfs.erofs / fsck.erofs: image disks
  e2fsprogs         # mkfs.ext4 / debugfs: ext4 fallback disks
  docker-registry   # a real OCI registry for tests (never started as a service)
  skopeo            # pushes test images; the P3 benchmark baseline
  umoci             # builds the demo image; the P3 benchmark baseline
  busybox-static    # the demo image's userland
  dropbear-bin      # the P2 benchmark baseline: ssh (dropbear server, dbclient) into the same VM
  iproute2          # ip/bridge: the Vessel bridge, TAP pool, test namespaces
  nftables          # nft: NAT egress, guest isolation, no guest access to the host
  procps            # sysctl: IPv4 forwarding in the daemon's namespace
  kmod              # depmod: kernel module dependency order
  cpio              # verifies initramfs archives in tests
  curl
  bsdutils          # script: a real pty for the `vessel exec -it` test
  zstd              # named snapshot compression (lz4 is used too when installed)
  passt             # user-mode network stack of guests with egress (never maps the host)
  buildah           # builds tests compare Vessel's images with `buildah bud`'s (vfs storage)
  mmdebstrap        # the debian-bookworm golden image of the image catalog
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The package may have been configured to start on boot; make sure it is not running.
if pgrep -f "docker-registry serve /etc/docker/registry" >/dev/null 2>&1; then
  echo "setup: warning: the docker-registry system service is running and listens on all interfaces; stop it" >&2
fi

stamp=node_modules/.vessel-lock-hash
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

npm run --silent build
echo "setup: ready"
