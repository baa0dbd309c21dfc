#!/bin/sh
# edgeq's command wrapper: every command edgeq runs on a device runs under it.
#
#   sh wrapper.sh TIMEOUT_S LABEL COMMAND [FILE...]
#
# - FILEs are files the command needs that edgeq keeps on the device (its scripts, the probe):
#   when one is missing, it says so ("edgeq-missing FILE" on stderr, exit status 97) and runs
#   nothing; edgeq then uploads them and runs the command again.
# - COMMAND (a shell command line) runs in its own session (setsid), hence its own process
#   group, with the real stdin (fd 3: an asynchronous list gets /dev/null otherwise).
# - A watchdog sleeps TIMEOUT_S, then TERMs the whole group and KILLs it 2 s later; once it
#   has fired it can no longer be cancelled, so the KILL happens even when the command's main
#   process died of the TERM.
# - When the command ends, what it left running in its group is TERMed: nothing outlives a
#   command, and no stray process keeps the channel open.
# - The watchdog reaps its own sleep when cancelled and holds no descriptor of the channel but
#   stderr, so the channel closes as soon as the command ends.
# - The exit status is the command's (143/137 when the watchdog stopped it, with
#   "edgeq-watchdog: LABEL timed out after" on stderr, which edgeq turns into an error).
t=$1; label=$2; c=$3
shift 3
missing=0
for f in "$@"; do
  [ -f "$f" ] || { printf 'edgeq-missing %s\n' "$f" >&2; missing=1; }
done
[ "$missing" -eq 0 ] || exit 97
exec 3<&0
if command -v setsid >/dev/null 2>&1; then
  setsid sh -c "$c" <&3 3<&- &
else
  sh -c "$c" <&3 3<&- &
fi
p=$!
exec 0</dev/null 3<&-
(
  sleep "$t" >/dev/null 2>&1 & s=$!
  trap 'kill "$s" 2>/dev/null; wait "$s" 2>/dev/null; exit 0' TERM
  wait "$s"
  trap '' TERM
  echo "edgeq-watchdog: $label timed out after $t s; stopping it" >&2
  kill -TERM -"$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
  sleep 2 >/dev/null 2>&1
  kill -KILL -"$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null
) </dev/null >/dev/null &
w=$!
wait "$p"; st=$?
kill -TERM -"$p" 2>/dev/null
kill -TERM "$w" 2>/dev/null; wait "$w" 2>/dev/null
exit "$st"
