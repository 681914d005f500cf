#!/usr/bin/env bash
# Regenerates the README's pictures in assets/ from real runs of the demo:
#   the explorer's screens (SVG, drawn in 256 colours as over SSH) and the HTML report (PNG,
#   photographed by headless Chromium when it is installed: apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
out=assets
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run --quiet --release --example screenshots -- "$tmp"
mkdir -p "$out"
cp "$tmp"/*.svg "$out"/
if command -v chromium >/dev/null 2>&1; then
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
    --user-data-dir="$tmp/chrome" --window-size=1100,1400 \
    --screenshot="$out/report.png" "file://$tmp/report.html" 2>/dev/null
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
    --user-data-dir="$tmp/chrome" --window-size=1100,1500 \
    --screenshot="$out/compare.png" "file://$tmp/compare.html" 2>/dev/null
else
  echo "chromium not installed: assets/report.png and compare.png left as they were" >&2
fi
ls -l "$out"
