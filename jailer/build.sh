#!/bin/sh
# Build the host-side jailer and copy it to jailer/target/vessel-jailer.
# Idempotent: cargo rebuilds only when sources changed.
set -eu
cd "$(dirname "$0")"
PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "build.sh: cargo not found (looked in PATH and ~/.cargo/bin); install Rust to build vessel-jailer" >&2
  exit 1
fi
cargo build --release --locked --quiet
cp target/release/vessel-jailer target/vessel-jailer.tmp
mv -f target/vessel-jailer.tmp target/vessel-jailer
echo "vessel-jailer: $(pwd)/target/vessel-jailer ($(wc -c < target/vessel-jailer) bytes)"
