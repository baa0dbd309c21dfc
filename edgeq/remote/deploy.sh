#!/bin/sh
# edgeq's on-device protocol for one model folder: deploy, rollback, status, remove.
#
#   sh deploy.sh ACTION DIR PYTHON TOKEN IDLE_S [LOCK_WAIT_S]
#
#   ACTION  deploy | rollback (the switch dialogue), status (read-only), remove
#   DIR     the model's folder, <remote_dir>/models/<name>
#   PYTHON  the device's Python: the fallback for sha256, fsync and rename
#   TOKEN   a random token naming this session's temporary files
#   IDLE_S  while the script waits for edgeq, it gives up after IDLE_S seconds without an
#           instruction or upload bytes: edgeq, or the link to it, is gone
#   LOCK_WAIT_S  how long to wait for the lock (default IDLE_S + 15: longer than a holder
#           whose edgeq is gone keeps it)
#
# Lines on stdout are the protocol (edgeq/deploy/session.py speaks the other side); "error ..." ends a
# failed session, "note ..." tells edgeq something it may show. stderr is for diagnostics only.
#
# The switch dialogue:
#   device: edgeq-state 1, current V|-, versions V..., free_kb N|-, machine M BITS, manifest SIZE + its bytes, ready
#   edgeq:  quit | activate V SHA256|- | upload V SHA256 SIZE + SIZE bytes
#   device: verified SHA256 | damaged REASON   (after an upload: flushed and in its folder)
#   edgeq:  skip | commit, the new manifest (one line), the versions to prune (one line)
#   device: switched V, warning ..., done
#
# Crash safety. Every writer holds the lock (flock on DIR/.lock), and under it:
#   - an upload goes to .incoming/ and is checked, flushed and renamed into its version folder
#     before anything can point at it;
#   - the commit writes the new manifest as a journal, DIR/.manifest.V.pending, then switches
#     `current` (a symlink renamed over it), then renames the journal to manifest.json; it
#     ignores HUP, INT, TERM and PIPE meanwhile, so only SIGKILL or a power cut can stop it;
#   - the next command that takes the lock finishes what a stopped one left: a journal whose
#     version is active becomes manifest.json (the switch happened), any other journal and
#     stale temporary files are deleted, half-pruned version folders removed.
#   The lock file records its holder (pid, since when, action, client) for the message of a
#   command that finds it taken. The kernel releases the lock when its holder dies; a holder
#   whose edgeq went away stops itself after IDLE_S (the guard below).
#
# POSIX sh only: it runs under dash, BusyBox ash and bash.
set -u
umask 022
action=$1; d=$2; py=$3; tok=$4; idle=$5; wait_s=${6:-$((idle + 15))}

say() { printf '%s\n' "$*"; }
cleanup() { :; }
die() { cleanup; say "error $*"; exit 3; }  # clean up first: edgeq may act on the error line at once

sha() {  # the sha256 of file $1 in hex: OpenSSL's uses the CPU's SHA instructions (6x coreutils' here), else
  h=""   # sha256sum (coreutils, BusyBox), shasum, the device's Python
  if command -v openssl >/dev/null 2>&1; then
    h=$(openssl dgst -sha256 -r < "$1" 2>/dev/null) || h=""
    h=${h%% *}
    case $h in *[!0-9a-f]*) h="";; esac
    [ ${#h} -eq 64 ] && { say "$h"; return; }
  fi
  if command -v sha256sum >/dev/null 2>&1; then h=$(sha256sum < "$1")
  elif command -v shasum >/dev/null 2>&1; then h=$(shasum -a 256 < "$1")
  else h=$("$py" -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())' "$1")
  fi
  say "${h%% *}"
}
flush() {
  sync -- "$1" 2>/dev/null || "$py" -c 'import os, sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))' "$1" 2>/dev/null || sync
}
replace() {
  mv -T -- "$1" "$2" 2>/dev/null || "$py" -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' "$1" "$2"
}
is_version() { case $1 in *[!0-9a-f]*|"") return 1;; esac; [ ${#1} -eq 12 ]; }
current() { readlink -- "$d/current" 2>/dev/null || :; }

# --------------------------------------------------------------------------- the lock

locked=""
holder() {  # the lock's record, in words
  rec=$(cat -- "$d/.lock" 2>/dev/null) || rec=""
  set -f
  # shellcheck disable=SC2086  # the record's fields, split on purpose
  set -- $rec
  set +f
  case ${2:-x} in *[!0-9]*) set --;; esac  # not a record of this edgeq's
  if [ $# -lt 5 ]; then
    printf 'another edgeq has held the lock on %s for %s s' "$d" "$wait_s"
    return
  fi
  now=$(date +%s 2>/dev/null) || now=$2
  printf 'another edgeq %s from %s (pid %s on the device) has held the lock on %s since %s (%s s)' \
    "$4" "$5" "$1" "$d" "$3" "$((now - $2))"
  kill -0 "$1" 2>/dev/null || printf '; that process has ended, but one it started still holds the lock'
}
lock() {
  command -v flock >/dev/null 2>&1 || return 0
  exec 9<>"$d/.lock" || die "cannot open $d/.lock"
  if ! flock -n 9; then
    flock -w "$wait_s" 9 || die "$(holder); try again later (see edgeq's README: the deploy lock)"
  fi
  locked=1
  client=${SSH_CLIENT:-this-machine}
  printf '%s %s %s %s\n' "$$" "$(date -u '+%s %Y-%m-%dT%H:%M:%SZ' 2>/dev/null || echo '0 -')" "$action" "${client%% *}" > "$d/.lock"
}

# under the lock: finish or undo what a stopped command left
recover() {
  [ -n "$locked" ] || return 0
  cur=$(current)
  for j in "$d"/.manifest.*.pending; do
    [ -f "$j" ] || continue
    v=${j##*/.manifest.}; v=${v%.pending}
    if [ -n "$cur" ] && [ "$v" = "$cur" ]; then
      if mv -f -- "$j" "$d/manifest.json"; then
        flush "$d"
        say "note the switch to $v had not been recorded in manifest.json (an earlier run was stopped); recorded now"
      fi
    else
      rm -f -- "$j"
    fi
  done
  set --  # stale temporary files, removed with one rm (and none when there are none: the usual case)
  for p in "$d/.incoming/"*.part "$d/.incoming/"*.err "$d/".current.* "$d/".manifest.* "$d/".sha256.* "$d/".guard.*; do
    [ -e "$p" ] || [ -L "$p" ] && set -- "$@" "$p"
  done
  [ $# -eq 0 ] || rm -f -- "$@"
  for p in "$d"/*; do
    b=${p##*/}
    is_version "$b" && [ -d "$p" ] && [ ! -f "$p/model.tflite" ] && [ "$b" != "$cur" ] && rm -rf -- "$p"
  done
  return 0
}

# --------------------------------------------------------------------------- the guard

# While the script waits for edgeq (between `waiting` and `working`), a background loop checks
# every second that something arrived: a new instruction, or upload bytes (the temporary
# file grew). After IDLE_S quiet seconds edgeq or its link is gone: it TERMs the script, whose
# traps clean up and so release the lock. It ends with the script.
gs="$d/.guard.$tok"; gr="$gs.ref"; guard_pid=""; seq=0
waiting() { seq=$((seq + 1)); printf 'wait %s\n' "$seq" 2>/dev/null > "$gs" || :; }
working() { printf 'work\n' 2>/dev/null > "$gs" || :; }
guard() {
  main=$$
  working
  (
    exec 3<&- 9>&- </dev/null >/dev/null 2>&1  # holds neither the lock nor the channel
    trap 'exit 0' TERM
    prev=""; quiet=0
    while kill -0 "$main" 2>/dev/null; do
      sleep 1
      IFS= read -r now 2>/dev/null < "$gs" || now=""
      case $now in
        wait*)
          moved=""
          for p in "$d/.incoming/"*".$tok.part"; do
            [ -f "$p" ] && [ -n "$(find "$p" -newer "$gr" 2>/dev/null)" ] && moved=1
          done
          if [ "$now" != "$prev" ] || [ -n "$moved" ]; then quiet=0; printf '' 2>/dev/null > "$gr"; else quiet=$((quiet + 1)); fi;;
        *) quiet=0;;
      esac
      prev=$now
      if [ "$quiet" -ge "$idle" ]; then
        kill -TERM "$main" 2>/dev/null
        exit 0
      fi
    done
  ) &
  guard_pid=$!
}

# --------------------------------------------------------------------------- the state report

versions() {
  vs=""
  for p in "$d"/*; do
    b=${p##*/}
    is_version "$b" && [ -f "$p/model.tflite" ] && vs="$vs $b"
  done
  printf '%s' "${vs# }"
}
state() {
  say "edgeq-state 1"
  cur=$(current)
  say "current ${cur:--}"
  vs=$(versions); say "versions ${vs:--}"
  free=$(df -Pk -- "$d" 2>/dev/null | awk 'NR==2 {print $4}') || free=""
  say "free_kb ${free:--}"
  say "machine $(uname -m 2>/dev/null || echo -) $(getconf LONG_BIT 2>/dev/null || echo -)"
  m="$d/manifest.json"
  # a switch done but not yet recorded (status takes no lock, so it reads the journal)
  [ -n "$cur" ] && [ -f "$d/.manifest.$cur.pending" ] && m="$d/.manifest.$cur.pending"
  if [ -f "$m" ]; then
    say "manifest $(wc -c < "$m" | tr -d ' ')"; cat -- "$m"
  else
    say "manifest 0"
  fi
}
verify() {
  f="$d/$1/model.tflite"
  [ -f "$f" ] || { say "damaged $1 has no model file"; return 1; }
  got=$(sha "$f")
  side=$(cat -- "$f.sha256" 2>/dev/null) || side=""
  case $got in "$1"*) ;; *) say "damaged the sha256 of $1/model.tflite is now $got"; return 1;; esac
  if [ "$2" != - ] && [ "$got" != "$2" ]; then say "damaged the sha256 of $1/model.tflite is $got, expected $2"; return 1; fi
  if [ -n "$side" ] && [ "$got" != "$side" ]; then say "damaged the sha256 of $1/model.tflite is $got, its .sha256 file says $side"; return 1; fi
  say "verified $got"
}

# --------------------------------------------------------------------------- deploy and rollback

upload() {  # upload V SHA256 SIZE: SIZE bytes from edgeq into version V
  v=$1; want=$2; size=$3
  is_version "$v" || die "not a version: $v"
  case $size in *[!0-9]*|"") die "not a size: $size";; esac
  tmp="$d/.incoming/$v.$tok.part"; terr="$tmp.err"
  # in the background, so that a TERM (the guard's) is handled at once, not when head ends
  waiting
  head -c "$size" <&3 >"$tmp" 2>"$terr" 9>&- &
  hp=$!
  wait "$hp"; rc=$?; hp=""
  working
  if [ "$rc" -ne 0 ]; then
    err=$(cat -- "$terr" 2>/dev/null) || err=""
    die "writing the model into $d failed: ${err:-exit status $rc}"
  fi
  n=$(wc -c < "$tmp" | tr -d ' ')
  [ "$n" = "$size" ] || die "received $n of $size bytes: the upload was cut short"
  chmod 0644 "$tmp"
  flush "$tmp" 9>&- & f=$!  # the flush (I/O) runs while the hash (CPU) is computed; both end before the rename
  got=$(sha "$tmp")
  wait "$f"
  [ "$got" = "$want" ] || die "the device computed sha256 $got, expected $want: the upload was damaged"
  err=$(mkdir -p -- "$d/$v" 2>&1) || die "cannot create $d/$v: $err"
  err=$({ printf '%s\n' "$got" > "$d/.sha256.$tok" && mv -f -- "$d/.sha256.$tok" "$d/$v/model.tflite.sha256"; } 2>&1) || die "cannot write $d/$v/model.tflite.sha256: $err"
  err=$(mv -f -- "$tmp" "$d/$v/model.tflite" 2>&1) || die "cannot move the model into $d/$v: $err"
  tmp=""
  flush "$d/$v"
  say "verified $got"
}

commit() {  # commit V MANIFEST: make V active and record it; nothing but SIGKILL stops it half way
  v=$1
  j="$d/.manifest.$v.pending"
  trap '' HUP INT TERM PIPE
  { printf '%s\n' "$2" > "$d/.manifest.$tok" && flush "$d/.manifest.$tok" && mv -f -- "$d/.manifest.$tok" "$j"; } ||
    die "cannot write the manifest in $d"
  if [ "$(current)" != "$v" ]; then
    ln -s -- "$v" "$d/.current.$tok" || { rm -f -- "$j"; die "cannot create $d/.current.$tok"; }
    replace "$d/.current.$tok" "$d/current" || { rm -f -- "$j"; die "cannot switch $d/current to $v"; }
  fi
  mv -f -- "$j" "$d/manifest.json" || say "warning the manifest could not be written"
  # one flush for the three renames: they are in one folder, so a crash keeps a prefix of them,
  # and the journal covers the one that matters (switched, not yet recorded)
  flush "$d"
  trap 'exit 143' HUP INT TERM PIPE
  say "switched $v"
}

switch() {
  err=$(mkdir -p -- "$d/.incoming" 2>&1) || die "cannot create $d/.incoming: $err"
  lock
  recover
  tmp=""; terr=""; hp=""
  cleanup() {
    # the upload's writer is stopped and reaped first: files it opens after the rm would outlive the script
    [ -n "$hp" ] && { kill "$hp" 2>/dev/null; wait "$hp" 2>/dev/null; }
    [ -n "$guard_pid" ] && kill "$guard_pid" 2>/dev/null
    rm -f -- ${tmp:+"$tmp"} ${terr:+"$terr"} "$d/.incoming/"*".$tok.part" "$d/.incoming/"*".$tok.part.err" \
      "$d/.current.$tok" "$d/.manifest.$tok" "$d/.sha256.$tok" "$gs" "$gr"
  }
  trap cleanup EXIT
  trap 'exit 143' HUP INT TERM PIPE
  guard
  state
  say ready
  v=""
  while :; do
    waiting
    IFS=' ' read -r cmd a1 a2 a3 || die "edgeq closed the session"
    working
    case $cmd in
      quit) exit 0;;
      activate)
        v=$a1
        is_version "$v" || die "not a version: $v"
        verify "$v" "$a2" && break;;
      upload) upload "$a1" "$a2" "$a3"; break;;
      *) die "unknown instruction: $cmd";;
    esac
  done
  waiting
  IFS= read -r step || die "edgeq closed the session before the switch: $v is on the device, not active"
  case $step in
    commit) ;;
    skip) exit 0;;
    *) die "unexpected instruction: $step";;
  esac
  IFS= read -r manifest || die "edgeq closed the session before the switch: $v is on the device, not active"
  IFS= read -r prune || prune=""
  working
  commit "$v" "$manifest"
  set -f
  for p in $prune; do
    if is_version "$p" && [ "$p" != "$v" ]; then
      rm -rf -- "${d:?}/$p" || say "warning cannot remove $d/$p"
    fi
  done
  say "done"
}

# --------------------------------------------------------------------------- status and remove

status() {  # read-only, takes no lock (a rollout in progress never blocks it)
  if [ ! -d "$d" ]; then say "edgeq-state 1"; say "absent"; exit 0; fi
  state
  cur=$(current)
  if [ -n "$cur" ]; then verify "$cur" - || true; else say "inactive"; fi
}

remove() {  # state -> "all" | "versions V..." + the new manifest -> done
  if [ ! -d "$d" ]; then say "edgeq-state 1"; say "absent"; exit 0; fi
  lock
  recover
  cleanup() {
    [ -n "$guard_pid" ] && kill "$guard_pid" 2>/dev/null
    rm -f -- "$d/.manifest.$tok" "$gs" "$gr" 2>/dev/null
  }
  trap cleanup EXIT
  trap 'exit 143' HUP INT TERM PIPE
  guard
  state
  say ready
  waiting
  IFS=' ' read -r cmd rest || die "edgeq closed the session"
  working
  case $cmd in
    quit) exit 0;;
    all)
      err=$(rm -rf -- "$d" 2>&1) || die "cannot remove $d: $err"
      say "done";;
    versions)
      waiting
      IFS= read -r manifest || die "edgeq closed the session"
      working
      cur=$(current)
      set -f
      for p in $rest; do
        is_version "$p" || continue
        [ "$p" = "$cur" ] && die "$p is the active version"
        rm -rf -- "${d:?}/$p" || die "cannot remove $d/$p"
      done
      if { printf '%s\n' "$manifest" > "$d/.manifest.$tok" && mv -f -- "$d/.manifest.$tok" "$d/manifest.json"; }; then :
      else rm -f -- "$d/.manifest.$tok"; say "warning the manifest could not be written"; fi
      say "done";;
    *) die "unknown instruction: $cmd";;
  esac
}

exec 3<&0  # the real stdin, for the upload running in the background
case $action in
  deploy|rollback) switch;;
  status) status;;
  remove) remove;;
  *) die "unknown action: $action";;
esac
