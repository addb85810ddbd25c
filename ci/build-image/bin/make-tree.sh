#!/bin/sh
# make-tree.sh DIR FILES KB [NAME]: a toolchain-like tree under DIR: bin/ with a few binary files
# (KB kilobytes of random bytes in all; bin/version prints NAME, default DIR), lib/ and share/
# with FILES small text files in directories of 50, as installs of language runtimes leave them.
# busybox sh only. Also the toolchain cache's installer for the tools the image does not bake in:
#   cache: { installer: 'sh ci/build-image/bin/make-tree.sh "$PREFIX" 100 512 "$TOOL $VERSION"' }
set -eu
dir=$1 files=$2 kb=$3 name=${4:-$1}
mkdir -p "$dir/bin" "$dir/lib" "$dir/share"
dd if=/dev/urandom of="$dir/bin/main" bs=1024 count="$kb" 2>/dev/null
printf '#!/bin/sh\necho %s\n' "$name" > "$dir/bin/version" && chmod 755 "$dir/bin/main" "$dir/bin/version"
i=0
while [ "$i" -lt "$files" ]; do
  sub=$((i / 50))
  mkdir -p "$dir/lib/d$sub" "$dir/share/d$sub"
  echo "module $i of $dir: $(printf '%064d' "$i")" > "$dir/lib/d$sub/m$i.src"
  echo "doc $i" > "$dir/share/d$sub/doc$i.txt"
  i=$((i + 1))
done
