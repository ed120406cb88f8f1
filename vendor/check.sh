#!/usr/bin/env bash
# Checks that vendor/sqlx-core is the published sqlx-core 0.9.0 with exactly one change,
# the one in vendor/sqlx-core.patch (TCP_NODELAY in connect_tcp; see vendor/README.md).
# Fails on any other difference, so nothing else can slip into the vendored tree.
#
# The published crate comes from cargo's cache, or is fetched by cargo itself (the
# ordinary client, which also checks it against the registry's index); its sha256 is
# pinned below, because Cargo.lock has no checksum for a crate that is patched. Run from
# anywhere; needs cargo, tar, patch and diff.
set -euo pipefail
cd "$(dirname "$0")"

NAME=sqlx-core
VERSION=0.9.0
# sha256 of sqlx-core-0.9.0.crate, as the crates.io index records it.
SHA256=05b44e85bf579a8eeb4ceaa77a3a523baf2bf0e9bac7e40f405d537b5d2d5ccb
VENDORED=sqlx-core
PATCH=sqlx-core.patch

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cache="${CARGO_HOME:-$HOME/.cargo}/registry/cache"

find_crate() {
  find "$cache" -name "$NAME-$VERSION.crate" 2>/dev/null | head -n 1
}

crate=$(find_crate)
if [ -z "$crate" ]; then
  # A throwaway package that depends on exactly this version: `cargo fetch` puts the
  # crate in cargo's cache. The workspace's lock file pins the other dependencies to
  # versions already cached.
  mkdir -p "$work/fetch/src"
  cat >"$work/fetch/Cargo.toml" <<EOF
[package]
name = "vendor-check"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$NAME = { version = "=$VERSION", default-features = false }

[workspace]
EOF
  : >"$work/fetch/src/lib.rs"
  cp ../Cargo.lock "$work/fetch/Cargo.lock"
  host=$(rustc -vV | sed -n 's/^host: //p')
  (cd "$work/fetch" && cargo fetch --quiet --target "$host")
  crate=$(find_crate)
  [ -n "$crate" ] || { echo "vendor/check.sh: cargo did not fetch $NAME $VERSION" >&2; exit 1; }
fi

echo "$SHA256  $crate" | sha256sum --check --quiet - \
  || { echo "vendor/check.sh: $crate is not the published $NAME $VERSION" >&2; exit 1; }

tar -xzf "$crate" -C "$work"
published="$work/$NAME-$VERSION"
# Files cargo adds when it packages a crate, which a path dependency neither has nor
# needs: the commit it was packaged from, and the lock file of its own build.
rm -f "$published/.cargo_vcs_info.json" "$published/Cargo.lock"

if ! patch --quiet --forward --no-backup-if-mismatch -p1 -d "$published" <"$PATCH"; then
  echo "vendor/check.sh: $PATCH no longer applies to the published $NAME $VERSION" >&2
  exit 1
fi

if ! diff -r "$published" "$VENDORED"; then
  echo "vendor/check.sh: vendor/$VENDORED differs from the published $NAME $VERSION" \
    "beyond vendor/$PATCH (the lines above: < published + patch, > vendored)" >&2
  exit 1
fi
echo "vendor/$VENDORED is the published $NAME $VERSION plus vendor/$PATCH"
