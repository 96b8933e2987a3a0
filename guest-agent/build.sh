#!/bin/sh
# Build the static guest program and copy it to guest-agent/target/vessel-init.
# Idempotent: cargo rebuilds only when sources changed.
set -eu
cd "$(dirname "$0")"
PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "build.sh: cargo not found (looked in PATH and ~/.cargo/bin); install Rust to build vessel-init" >&2
  exit 1
fi
# Static linking: .cargo/config.toml sets -C target-feature=+crt-static for the gnu target.
cargo build --release --locked --quiet
cp target/release/vessel-init target/vessel-init.tmp
mv -f target/vessel-init.tmp target/vessel-init
if ! file target/vessel-init 2>/dev/null | grep -q 'static'; then
  if command -v file >/dev/null 2>&1; then
    echo "build.sh: target/vessel-init is not statically linked" >&2
    exit 1
  fi
fi
echo "vessel-init: $(pwd)/target/vessel-init ($(wc -c < target/vessel-init) bytes)"
