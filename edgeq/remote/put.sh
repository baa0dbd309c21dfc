#!/bin/sh
# edgeq's upload of one file (Connection.put): stdin into TARGET, atomically.
#
#   sh put.sh TARGET SIZE
#
# The bytes go to a temporary name beside TARGET, their count is checked against SIZE, then the
# file is renamed over TARGET: TARGET is either the old file or the whole new one.
set -u
umask 022
f=$1; size=$2
t="$f.edgeq-$$.part"
mkdir -p -- "$(dirname -- "$f")" || exit 1
trap 'rm -f -- "$t"' EXIT
cat > "$t" || exit 1
n=$(wc -c < "$t" | tr -d ' ')
[ "$n" -eq "$size" ] || { echo "received $n of $size bytes" >&2; exit 1; }
mv -f -- "$t" "$f"
