//! The help texts of `dlock` and its commands (after the generated option lists), and the
//! table of exit codes.

/// The exit codes, as shown at the end of `dlock --help` and `dlock acquire --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0      success; with a command: the command exited 0
  N      with a command: the command's own exit status
  1      lock not acquired: refused by --no-wait or --timeout expired (changed with
         --conflict-exit-code). dlock acquire is never chosen as a deadlock victim: its
         session waits for one lock while holding none. Deadlocks need a session that
         holds and waits, as dlock session can: it answers the victim's request with
         \"error\":\"deadlock\" and goes on (its exit codes: dlock session --help)
  2      usage error, or an argument the server rejects (an empty or too long name,
         a --ttl outside its bounds)
  69     server unreachable (also when it stays unreachable for a whole lease while
         waiting for the lock), at its limits (too many connections or sessions, a
         request rate over its limit), or a cluster without a leader: members answer that
         they do not lead for 5 s (dlock waits that long for a fail-over); with
         --timeout or --no-wait, also a server that did not answer within the wait
         time plus 2 s, connecting included (frozen, or cut off by the network)
  70     internal or protocol error, or a stdout that cannot be written
  77     not permitted: no or a wrong credential (token, client certificate), or the
         server's rules do not allow this identity to do this
  75     lock lost while held (lease lapsed or session expired); the command was
         sent SIGTERM (SIGKILL after --kill-grace)
  126    the command could not be executed
  127    the command was not found
  128+N  the command was killed by signal N; 141 (SIGPIPE) also when stdout is a
         pipe whose reader has gone (dlock ... | head), and dlock says nothing";

pub(crate) const ROOT_AFTER_HELP: &str = "\
Examples:
  # Run a command while holding an exclusive lock on \"backup\":
  dlock acquire backup -- ./backup.sh
  # Shared (PR) lock, give up after 30 s of waiting:
  dlock acquire --mode PR --timeout 30s config -- cat /etc/app.conf
  # Skip this run if another holds the lock:
  dlock acquire --no-wait cron.nightly -- ./job
  # Print the fencing token and hold the lock until Ctrl-D or Ctrl-C:
  dlock acquire db
  # Every lock with its holders and waiters; as JSON for names starting with \"jobs.\":
  dlock status
  dlock status --json jobs.
  # Several locks in one session, conversions, value blocks, from a script (JSON answers):
  coproc DL { dlock session; }; echo 'lock a deploy EX' >&\"${DL[1]}\"
  # Server version and round-trip time:
  dlock ping
  # Check a server's audit log (rotated files included) against the locking rules:
  dlock verify /var/log/dlock/audit.jsonl*
  # Shell completions:
  dlock completions bash > ~/.local/share/bash-completion/completions/dlock";

pub(crate) const ACQUIRE_AFTER_HELP: &str = "\
With a command, dlock takes the lock, runs the command with DLOCK_TOKEN (the fencing
token), DLOCK_RESOURCE and DLOCK_MODE in its environment, forwards SIGINT, SIGTERM,
SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGALRM to it (dlock itself stays to release the
lock), releases the lock when it exits, and exits with its exit status. If the lock is lost
while the command runs, the command gets SIGTERM (SIGKILL after --kill-grace) and dlock
exits 75. When dlock runs in the foreground of a terminal (even with stdin redirected),
the command shares dlock's process group so that it can use the terminal (a password
prompt), and signals reach the command's process only (a Ctrl-C typed at the terminal
reaches it directly, so dlock does not send a second SIGINT; the same for Ctrl-\\ and a
hang-up; the same signals sent to dlock with kill are forwarded). Otherwise (no
terminal: scripts, cron, services; or a background job) the command runs in a process
group of its own and these signals reach its children too. If the command is stopped
(SIGSTOP, or SIGTTIN when it reads a terminal its group does not own), dlock says so on
stderr; it keeps the lock until the command continues or ends.

If dlock itself is killed (kill -9, the OOM killer), the command gets SIGTERM at once
(its own process; processes it started stop only if it passes the signal on).
The lock stays held until the session's lease runs out (--ttl), which gives the command
that long to stop; a command that ignores SIGTERM runs on without the lock, and then only
fencing tokens (DLOCK_TOKEN, checked by the resource) protect the resource.

Without a command, dlock prints the fencing token alone on one line of stdout and holds
the lock until it receives one of those signals or its standard input reaches end of file.
A '--' with nothing after it (an empty \"$@\" in a wrapper script) is a usage error, not
this form.

If the lock is not granted, one line on stderr names who holds it, and dlock exits 1.
While waiting with stderr on a terminal, a status line shows who holds the lock and the
place in the queue. One of those signals while waiting cancels the request, and dlock exits
128 + its number.

Examples:
  # One deployment at a time:
  dlock acquire deploy -- ./deploy.sh
  # Shared lock; wait at most 10 s; the command sees its fencing token:
  dlock acquire -m PR -w 10s reports -- sh -c 'echo \"token $DLOCK_TOKEN\"; ./report'
  # Exit 0 instead of 1 when another holds the lock:
  dlock acquire -n -E 0 cron.hourly -- ./job
  # A resource name that starts with '-' (NAME would be taken for an option):
  dlock acquire --resource -nightly -- ./job
  # Hold a lock across several steps of a bash script:
  coproc LOCK { dlock acquire maintenance; }
  read -r TOKEN <&\"${LOCK[0]}\"            # returns once the lock is held
  ./step1 && ./step2
  eval \"exec ${LOCK[1]}>&-\"; wait $LOCK_PID  # end of stdin: released
";

pub(crate) const STATUS_AFTER_HELP: &str = "\
Examples:
  dlock status
  dlock status jobs.
  dlock status -- -nightly      # a prefix that starts with '-'
  dlock status hex:6a6f6200     # a prefix given by its bytes: \"job\" and a NUL
  dlock status --json | jq -r '.resources[].holders[].session_name'

JSON shape (stable): {\"resources\": [{\"name\", \"value_valid\", \"holders\", \"converting\",
\"waiting\"}]} where each lock is {\"lock\", \"session\", \"session_name\", \"mode\",
\"requested_mode\", \"token\", \"since_ms\", \"for_ms\"}. \"mode\" is the granted mode (null while
waiting), \"requested_mode\" the mode waited for (null for holders), \"token\" the fencing
token of the latest grant (null while waiting), \"since_ms\" the server clock when the lock
entered its state and \"for_ms\" how long ago that was, by the server clock of the same reply
(\"now_ms\" at the top level). A name that is not UTF-8 also has \"name_hex\", its bytes
in hexadecimal. A resource with more locks than fit in one answer lists the first ones of each
queue in turn and has \"omitted\", the number of the others. When more resources follow than --limit, the document also has
\"next_cursor\" (the last name as text) and \"next_cursor_hex\" (its bytes in hexadecimal):
pass --cursor hex:NEXT_CURSOR_HEX, which always goes on after exactly that name. The same
document as the server's HTTP /api/resources.";

pub(crate) const PING_AFTER_HELP: &str = "\
Example:
  $ dlock ping
  server 127.0.0.1:7420, version dlock-server 0.1.0, round trip 0.23 ms";

pub(crate) const VERIFY_AFTER_HELP: &str = "\
dlock verify replays a server's audit log (dlock-server --audit-log PATH) and checks what
the server decided: no two incompatible locks granted at once (R7); fencing tokens strictly
increasing per resource, also across restarts; every request answered once and completed
at most once; grants in FIFO order with no waiter left queued when it could be granted
(R10-R13); sessions expired no earlier than their lease and no later than the lease plus
--expiry-allowance. Whether a client saw its lock lost before another was granted it needs
the clients' own records: that is not checked, and the output says so.

Give the files oldest first. A rotated log is PATH.N .. PATH.2 PATH.1 PATH; the files of one
rotated log are put in that order whatever order they are given in, so a shell glob
(audit.jsonl*) works. Logs that are not one rotated log (one file per server lifetime, say)
are read in the order given. A directory stands for the files in it whose names begin with
\"audit\". When the oldest files are gone (--audit-log-keep), the history begins in the
middle of a server lifetime: locks and sessions from before it are not judged, and the
output says so. Each violation is printed with the FILE:LINE where it was found and the lines it
rests on (the grants in conflict, the grant of the earlier token). A Gap line (audit lines the
server could not write) is reported too: nothing after it can be judged soundly.

Examples:
  dlock verify audit.jsonl.2 audit.jsonl.1 audit.jsonl
  dlock verify /var/log/dlock/audit.jsonl*
  dlock verify /var/log/dlock/

Exit codes:
  0  the history is safe
  1  a violation was found (or the history has a gap)
  2  usage error, or a file that cannot be read, is corrupt or is not an audit log
     (a last line torn before its newline, as a crash leaves, is skipped), or files
     that hold no audit line at all (an empty file: most likely the wrong path)";

pub(crate) const COMPLETIONS_AFTER_HELP: &str = "\
Examples:
  dlock completions bash > ~/.local/share/bash-completion/completions/dlock
  dlock completions zsh > ~/.zfunc/_dlock
  dlock completions fish > ~/.config/fish/completions/dlock.fish";

/// The text after `dlock session --help`: the protocol, an example, the exit codes.
pub(crate) const SESSION_AFTER_HELP: &str = "\
Reads one command per line on stdin and answers with JSON objects, one per line on stdout
(flushed after each). Lines are carried out in order, each once the one before has its first
answer (granted, waiting, refused, converting, ...), but a request that waits does not hold
up the lines after it: its outcome is answered when it comes. (In a server's restart grace a
lock request is held unanswered: its first answer, and the lines after it, wait for the
grace's end or its timeout.) TAG (1-64 letters, digits, '_' or '-') names a lock from its `lock` until it is unlocked, refused or lost; then the tag is
free again. For query and ping the tag only labels the answer.

Commands:
  lock TAG NAME MODE [nowait | timeout=DURATION] [notify] [value]
        request a lock; notify: report blocking notifications; value: read the value block
  convert TAG MODE [nowait | timeout=DURATION] [quecvt] [value | value=HEX | invalidate]
        convert it up or down; value reads the value block, value=HEX writes it and
        invalidate marks it not valid (both on a conversion from PW or EX down or to
        the same mode)
  unlock TAG [value=HEX | invalidate]
        release it, writing the value block or marking it not valid (from PW or EX)
  cancel TAG      cancel its waiting request or conversion
  query TAG NAME  the resource's holders, converters, waiters and value block
  ping TAG        the server's version and the round trip
  quit            close the session (as end of input does); its end releases its locks, and
                  leaves the value block of one held in PW or EX not valid (unlock first to
                  publish a value)
MODE is NL, CR, CW, PR, PW or EX. NAME is printable ASCII without blanks, or hex:HEX for any
other name (the answers show names the same way). Blank lines and lines starting with # are
ignored.

Answers: {\"tag\": TAG, \"event\": EVENT, ...}
  waiting     the request is queued: resource, mode
  granted     resource, mode, token (the fencing token); value (hex), value_valid with value
  converting  the conversion is queued: mode (asked for), held (kept meanwhile)
  converted   mode, token; value, value_valid when read
  refused     not granted: op (lock or convert), error, message; held (a conversion's lock
              keeps this mode)
  unlocked    released
  blocking    another request waits for mode, which this lock blocks (locks taken with notify)
  lost        the session is gone, and the lock with it: reason
  resource    the answer to query (the shape of one resource of dlock status --json)
  pong        the answer to ping: server_version, rtt_ms
  error       a line that could not be carried out: line, error, message (no tag if the line
              has none); the session goes on
Error names: not_queued, timed_out, deadlock (this request was chosen as the victim of a
deadlock), cancelled, lost, not_found, busy, not_pending, invalid, limit, not_permitted,
unavailable, overloaded, too_large, failed; and for lines: syntax, no_lock, tag_in_use,
too_many_tags (at most 4096 tags at once; an unlocked tag frees its place).

Example (bash):
  coproc DL { dlock session; }
  echo 'lock a deploy EX' >&\"${DL[1]}\"
  read -r answer <&\"${DL[0]}\"   # {\"tag\":\"a\",\"event\":\"granted\",\"resource\":\"deploy\",\"mode\":\"EX\",\"token\":7}
  echo 'convert a PR' >&\"${DL[1]}\"; read -r answer <&\"${DL[0]}\"   # ...\"converted\"...
  echo quit >&\"${DL[1]}\"; wait $DL_PID

Exit codes:
  0      end of input or quit: the session was closed, releasing its locks
  2      usage error on the command line
  69     server unreachable at start, or the session lost (after the lost answers)
  70     stdout cannot be written, or another error at start
  141    stdout is a pipe whose reader has gone (as a program SIGPIPE kills)
  77     not permitted: no or a wrong credential
  128+N  ended by signal N (SIGINT, SIGTERM, SIGHUP, ...); the session was closed";
