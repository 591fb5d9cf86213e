#!/usr/bin/env bash
# Render a run's report.html in headless Chromium (Debian `chromium`) and save a screenshot.
#   scripts/screenshot_report.sh RUN_DIR [OUT.png] [WIDTH]   (WIDTH in px, default 1280: a laptop window)
set -euo pipefail
run_dir=$(cd "$1" && pwd)
out=${2:-$run_dir/report.png}
width=${3:-1280}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size="$width",2400 --screenshot="$out" \
  "file://$run_dir/report.html" >/dev/null 2>&1
[ -s "$out" ] || { echo "no screenshot written" >&2; exit 1; }
echo "$out"
