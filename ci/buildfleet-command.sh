# Sourced by the ci/ scripts: sets the array `buildfleet` to the command to run: $BUILDFLEET
# when set, else `buildfleet` on PATH, else this checkout's build (dist/), else its sources (tsx).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${BUILDFLEET:-}" ]; then
  read -r -a buildfleet <<<"$BUILDFLEET"
elif command -v buildfleet >/dev/null 2>&1; then
  buildfleet=(buildfleet)
elif [ -f "$repo/dist/cli/main.cjs" ]; then
  buildfleet=(node "$repo/dist/cli/main.cjs")
else
  buildfleet=(node --import "file://$repo/node_modules/tsx/dist/loader.mjs" "$repo/cli/main.cts")
fi
