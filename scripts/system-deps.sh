#!/usr/bin/env bash
# The Debian packages assay's set-up needs, installed only when missing and apt is usable (root, or
# passwordless sudo); otherwise the affected parts say so when they run.
#
#   scripts/system-deps.sh demo   the Fashion-MNIST files `assay demo` trains on
#   scripts/system-deps.sh all    those, plus the Chromium of the browser tests, the PostgreSQL server the
#                                 store's tests run against (a throwaway one, see scripts/with-postgres.sh), and
#                                 the fortunes corpus the text tests and the README's text example read
#                                 (/usr/share/games/fortunes: quotes in category files; the text example needs
#                                 the hf extra that only `make setup` installs, so `make demo` skips it)
set -euo pipefail

FMNIST_DIR=/usr/share/datasets/fashion-mnist
missing=()
[ -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ] || missing+=(dataset-fashion-mnist)
if [ "${1:-all}" = all ]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql)
  fi
  # fortunes-min alone holds three of the category files; `science` comes with the full package.
  [ -f /usr/share/games/fortunes/science ] || missing+=(fortunes)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else sudo=(none); fi
if [ "${sudo[*]:-}" = none ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "Note: could not install ${missing[*]} (apt not usable); what needs them skips and says so" \
    "(for Fashion-MNIST elsewhere, point --data at its IDX files: idx:DIR)."
  exit 0
fi
echo "Installing Debian packages: ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
