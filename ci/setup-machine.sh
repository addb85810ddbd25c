#!/usr/bin/env bash
# Installs what buildfleet needs on a fresh Debian machine (as root): the real Docker Engine and
# OCI registry the tests and the quickstart start, plus the tools they compare against. Run once,
# never from parallel tests (dpkg holds a lock).
set -euo pipefail
# xfsprogs: the copy-on-write store of preloaded runtime disks (reflinks). libdeflate-dev (with make and g++, already on this kind of machine) builds the gzip accelerator; libdeflate-tools gives the bench its floor row.
packages=(docker.io docker-registry containerd busybox-static pigz zstd skopeo umoci openssl attr libcap2-bin e2fsprogs xfsprogs util-linux libdeflate-dev libdeflate-tools)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "buildfleet setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "buildfleet setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
