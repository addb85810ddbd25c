#!/bin/sh
# Builds the optional libdeflate addon (npm run build:native). Where it cannot be built (no
# libdeflate-dev, no compiler, no Node headers) it says so once and gzip falls back to Node's zlib.
cd "$(dirname "$0")" || exit 1
if node-gyp rebuild >build.log 2>&1; then
  exit 0
fi
echo "buildfleet: the libdeflate addon was not built (see imagebuilder/native/build.log; needs libdeflate-dev, make, g++); gzip uses Node's zlib, about half as fast" >&2
exit 0
