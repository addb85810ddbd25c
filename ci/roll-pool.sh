#!/usr/bin/env bash
# ci/roll-pool.sh POOL IMAGE_REF
#
# Rolls node pool POOL to IMAGE_REF (best by digest: HOST/REPO@sha256:..., as
# build-and-push.sh prints it) with `buildfleet pool roll`: new nodes pre-pull the image and
# become Ready first, then the old ones are drained and removed. The Jenkinsfile and the
# workflow call it after a push; it runs the same on a developer's machine.
#
# Environment (optional):
#   POOL_ARGS    extra arguments for `pool roll` (e.g. "--provider gke --state-dir /var/lib/bf")
#   BUILDFLEET   the buildfleet command (default: `buildfleet` on PATH, else this checkout's)
set -euo pipefail

if [ $# -ne 2 ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
fi
. "$(dirname "$0")/buildfleet-command.sh"
read -r -a extra <<<"${POOL_ARGS:-}"
exec "${buildfleet[@]}" pool roll "$1" --image "$2" "${extra[@]}"
