#!/usr/bin/env bash
# ci/build-and-push.sh IMAGE [CONTEXT]
#
# Builds CONTEXT (default: ci/build-image) on the Docker Engine, squashes the result and pushes
# it to IMAGE (HOST/REPO:TAG) with `buildfleet image build`, writes the JSON report, and prints
# the pushed image by digest (HOST/REPO@sha256:...) on the last line of stdout, also into
# $REF_FILE. The Jenkinsfile and the GitHub Actions workflow call it; it runs the same on a
# developer's machine (DOCKER_HOST or /var/run/docker.sock).
#
# Environment (all optional):
#   REGISTRY_USER, REGISTRY_PASSWORD   credentials for IMAGE's registry (written to a private
#                                      temp auth file, never on a command line)
#   SQUASH_LAYERS   output layers of the squash (default 1; 0 = push the layers as built)
#   BUILD_ARGS      space-separated NAME=VALUE build arguments
#   BUILD_NETWORK   network of RUN steps (e.g. none)
#   DOCKERFILE      Dockerfile path (default CONTEXT/Dockerfile)
#   REPORT          report file (default build-report.json)
#   REF_FILE        where the pushed digest reference goes (default build-image.ref)
#   BUILDFLEET      the buildfleet command (default: `buildfleet` on PATH, else this checkout's)
#
# Exit codes are buildfleet's (ci/README.md): 10 a build step failed, 2 bad input or no
# Dockerfile, 4 registry credentials refused, 5 registry unreachable, 8 no Docker Engine.
set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  [ $# -ge 1 ] && exit 0 || exit 2
fi
image=$1
. "$(dirname "$0")/buildfleet-command.sh"
context=${2:-$repo/ci/build-image}
report=${REPORT:-build-report.json}
ref_file=${REF_FILE:-build-image.ref}

args=(image build "$context" --tag "$image" --push --report "$report")
layers=${SQUASH_LAYERS:-1}
if [ "$layers" != "0" ]; then args+=(--squash --layers "$layers"); fi
if [ -n "${DOCKERFILE:-}" ]; then args+=(--file "$DOCKERFILE"); fi
if [ -n "${BUILD_NETWORK:-}" ]; then args+=(--network "$BUILD_NETWORK"); fi
for arg in ${BUILD_ARGS:-}; do args+=(--build-arg "$arg"); done

global=()
if [ -n "${REGISTRY_USER:-}" ]; then
  authdir=$(mktemp -d)
  trap 'rm -rf "$authdir"' EXIT
  host=${image%%/*}
  auth=$(printf '%s:%s' "$REGISTRY_USER" "${REGISTRY_PASSWORD:-}" | base64 | tr -d '\n')
  (umask 077 && printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$host" "$auth" >"$authdir/config.json")
  global+=(--authfile "$authdir/config.json")
fi

"${buildfleet[@]}" "${global[@]}" "${args[@]}"

# The image by digest, for the roll and for the CI's own record.
digest=$(node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).result.manifestDigest)' "$report")
name=$image
case "${image##*/}" in *:*) name=${image%:*} ;; esac
ref="$name@$digest"
printf '%s\n' "$ref" >"$ref_file"
if [ -n "${GITHUB_OUTPUT:-}" ]; then printf 'image=%s\n' "$ref" >>"$GITHUB_OUTPUT"; fi
printf '%s\n' "$ref"
