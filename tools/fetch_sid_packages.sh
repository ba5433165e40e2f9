#!/usr/bin/env bash
# fetch_sid_packages.sh DIR PACKAGE=VERSION...: download Debian packages from the sid suite without
# installing them and unpack them all into DIR (replaced only once every package is unpacked).
#
# A temporary apt source for sid, with the same URI as the machine's Debian archive, exists only while
# this runs: it is removed and the package lists refreshed again on every exit, failures included, so
# apt afterwards knows nothing of sid. Needs root and apt-get; bin/setup runs it under its apt lock.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 DIR PACKAGE=VERSION..." >&2; exit 2; fi
target=$1; shift
source_file=/etc/apt/sources.list.d/etcdops-sid-temporary.sources

# the machine's Debian archive (not the security one), as apt itself reads its sources
uri=$(apt-get indextargets --format '$(REPO_URI)' 'Label: Debian' 'Identifier: Packages' | head -n 1)
if [ -z "$uri" ]; then echo "error: no Debian apt source to take sid's packages from" >&2; exit 1; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/etcdops-sid.XXXXXX")
chmod 755 "$work"
if id _apt >/dev/null 2>&1; then chown _apt "$work"; fi  # apt downloads as its own unprivileged user
cleanup() {
  rm -f "$source_file"
  apt-get update -qq >/dev/null 2>&1 || echo "warning: apt-get update after removing $source_file failed" >&2
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # through the EXIT trap

{
  echo "Types: deb"
  echo "URIs: $uri"
  echo "Suites: sid"
  echo "Components: main"
  if [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
    echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  fi
} > "$source_file"
apt-get update -qq >/dev/null
(cd "$work" && apt-get download -qq "$@" >/dev/null)
mkdir -p "$work/root"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
mkdir -p "$(dirname "$target")"
rm -rf "$target.partial"
cp -a "$work/root" "$target.partial"
rm -rf "$target"
mv "$target.partial" "$target"
