#!/usr/bin/env bash
# Keeps docs/architecture.md's inventory true: every header under include/loom
# must be named there, by its path relative to include/loom (`model/trainer.hpp`),
# and every header the inventory names must exist. Only the lines between
# `<!-- inventory begin -->` and `<!-- inventory end -->` count; a header is
# named when its path starts a line of that block (after spaces).
#
#   tests/docs_inventory.sh [source dir]     (ctest: docs_architecture_inventory)
set -euo pipefail

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
doc=$root/docs/architecture.md
include=$root/include/loom

[[ -f $doc ]] || { echo "docs_inventory: no $doc" >&2; exit 1; }
[[ -d $include ]] || { echo "docs_inventory: no $include" >&2; exit 1; }

block=$(awk '/<!-- inventory begin -->/ { on = 1; next } /<!-- inventory end -->/ { on = 0 } on' "$doc")
[[ -n $block ]] || {
  echo "docs_inventory: $doc has no inventory (the lines between <!-- inventory begin --> and <!-- inventory end -->)" >&2
  exit 1
}

# The paths the inventory names: the first word of a line, when it ends in .hpp.
named=$(printf '%s\n' "$block" | awk '$1 ~ /\.hpp$/ { print $1 }' | sort -u)
# The headers that exist, relative to include/loom.
present=$(cd "$include" && find . -name '*.hpp' -type f | sed 's|^\./||' | sort -u)

missing=$(comm -23 <(printf '%s\n' "$present") <(printf '%s\n' "$named"))
stale=$(comm -13 <(printf '%s\n' "$present") <(printf '%s\n' "$named"))

status=0
if [[ -n $missing ]]; then
  status=1
  echo "docs/architecture.md's inventory does not name these headers under include/loom."
  echo "Add one line for each inside the inventory block (between <!-- inventory begin -->"
  echo "and <!-- inventory end -->), the path first, then what the header holds:"
  while IFS= read -r h; do printf '  %-30s <what it holds>\n' "$h"; done <<< "$missing"
fi
if [[ -n $stale ]]; then
  status=1
  echo "docs/architecture.md's inventory names headers that are not under include/loom;"
  echo "remove these lines from the inventory block (or correct their paths):"
  while IFS= read -r h; do printf '  %s\n' "$h"; done <<< "$stale"
fi
if [[ $status == 0 ]]; then
  echo "docs/architecture.md names all $(printf '%s\n' "$present" | wc -l) headers under include/loom, and no other"
fi
exit $status
