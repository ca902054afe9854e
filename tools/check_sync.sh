#!/usr/bin/env bash
# Fails when bssn_book/ is not what nbdev-export makes of nbs/, or when a
# notebook is not clean (nbdev-clean would change it). Works on a copy, so it
# never touches the working tree.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.venv/bin"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r "$root/nbs" "$root/bssn_book" "$root/pyproject.toml" "$tmp/"
find "$tmp" -name __pycache__ -prune -exec rm -rf {} +
cp -r "$tmp/bssn_book" "$tmp/bssn_book.committed"
cp -r "$tmp/nbs" "$tmp/nbs.committed"
(cd "$tmp" && "$bin/nbdev-export" && "$bin/nbdev-clean")
status=0
# --no-dereference: assets/results/ holds links into experiments/ (not copied here), compared as links
if ! diff -r --no-dereference "$tmp/bssn_book.committed" "$tmp/bssn_book" > "$tmp/lib.diff"; then
  echo "check_sync: bssn_book/ is out of sync with nbs/. Run 'make export' (nbdev-export) and commit the result:" >&2
  head -40 "$tmp/lib.diff" >&2
  status=1
fi
if ! diff -r -q "$tmp/nbs.committed" "$tmp/nbs" >&2; then
  echo "check_sync: the notebooks above are not clean. Run '.venv/bin/nbdev-clean' and commit them." >&2
  status=1
fi
[ $status -eq 0 ] && echo "check_sync: bssn_book/ matches nbs/, notebooks are clean"
exit $status
