# shellcheck shell=bash
# The machinery of the system test (tests/system/run): Debian roots, booting them under
# systemd-nspawn, running commands inside, the simulators on the host, assertions, results and
# clean-up. The scenarios are in tests/system/scenarios.sh.

# ---------------------------------------------------------------------------------------------
# Output, timings, results

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

TIMINGS=()
# timed NAME COMMAND...: runs the command and records how long it took.
timed() {
    local name=$1 start=$SECONDS rc=0
    shift
    "$@" || rc=$?
    TIMINGS+=("$(printf '%5ss  %s' "$((SECONDS - start))" "$name")")
    return "$rc"
}

RESULTS=()
FAILED=0
# record ARCH SCENARIO pass|FAIL DETAIL
record() {
    RESULTS+=("$(printf '| %s | %s | %s | %s |' "$1" "$2" "$3" "$4")")
    [ "$3" = pass ] || FAILED=$((FAILED + 1))
}

# A scenario fails through `fail MESSAGE`, which ends the scenario's subshell.
fail() {
    log "FAIL: $*"
    echo "$*" >"$SCENARIO_FAILURE"
    exit 1
}

# note TEXT: a scenario that passes with something to say (a step it skipped) says it here; the
# results table shows it beside the scenario.
note() {
    log "NOTE: $*"
    echo "$*" >>"$SCENARIO_NOTES"
}

expect_eq() { # WHAT ACTUAL EXPECTED
    [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
}
expect_contains() { # WHAT TEXT NEEDLE
    case "$2" in
    *"$3"*) ;;
    *) fail "$1: '$3' not in: $(printf '%s' "$2" | tail -n 15)" ;;
    esac
}
expect_lacks() { # WHAT TEXT NEEDLE
    case "$2" in
    *"$3"*) fail "$1: '$3' must not appear" ;;
    *) ;;
    esac
}

# wait_until DESCRIPTION SECONDS COMMAND...: polls until the command succeeds.
wait_until() {
    local what=$1 limit=$2 deadline
    shift 2
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "not within ${limit}s: $what"
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------
# Clean-up: everything started or mounted is undone on exit, success or not.

CLEANUP=()
on_exit() { CLEANUP+=("$*"); }
run_cleanup() {
    local i
    for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUP[$i]}" >/dev/null 2>&1 || true
    done
    CLEANUP=()
}

# remove_tree DIR: deletes a directory a debootstrap or a container may still have file systems
# mounted in (a debootstrap killed half-way leaves the root's proc and sys mounted): those are
# unmounted first, and rm never crosses into another file system.
remove_tree() {
    [ -e "$1" ] || return 0
    awk -v dir="$1/" 'index($2, dir) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r mount; do umount -l "$mount" || true; done
    rm -rf --one-file-system "$1"
}
# kill_tree PID: the process and its descendants (only processes this harness started).
kill_tree() {
    local pid=$1 child
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        kill_tree "$child"
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# Debian roots

# make_root ARCH DIR: a Debian 12 minbase root with systemd, from Debian's package registry.
# The first stage (download, unpack) runs natively; before the second (dpkg configuring every
# package inside the root, emulated on arm64) the root gets a dpkg configuration for a test
# root: no fsync per unpacked file (a throw-away root has no power cut to survive), no manual
# pages or translations, and on a foreign architecture no CA certificate files, whose hashing by
# `update-ca-certificates` takes minutes under qemu-user (the system test's API is plain http on
# loopback; the CA bundle only matters for an https API, which the suite's tests/suite/tls.rs covers).
make_root() {
    local arch=$1 dir=$2 host_arch
    host_arch=$(dpkg --print-architecture)
    nice -n 10 debootstrap --foreign --variant=minbase --arch="$arch" \
        --include=systemd,systemd-sysv,dbus,passwd,ca-certificates \
        bookworm "$dir" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$dir.debootstrap.log" 2>&1 ||
        { tail -n 30 "$dir.debootstrap.log" >&2; return 1; }
    mkdir -p "$dir/etc/dpkg/dpkg.cfg.d"
    {
        echo force-unsafe-io
        echo 'path-exclude=/usr/share/man/*'
        echo 'path-exclude=/usr/share/locale/*'
        [ "$arch" = "$host_arch" ] || echo 'path-exclude=/usr/share/ca-certificates/*'
    } >"$dir/etc/dpkg/dpkg.cfg.d/50-pos-agent-system-test"
    nice -n 10 chroot "$dir" /debootstrap/debootstrap --second-stage >>"$dir.debootstrap.log" 2>&1 ||
        { tail -n 30 "$dir.debootstrap.log" >&2; return 1; }
    # Nothing inside needs a console login or networking of its own (the host's is shared).
    rm -f "$dir/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
    echo "pos-agent-test-$arch" >"$dir/etc/hostname"
    rm -rf "$dir/var/cache/apt/archives/"*.deb
}

# binfmt for arm64 roots: qemu-aarch64-static registered with the kernel.
ensure_binfmt_aarch64() {
    mountpoint -q /proc/sys/fs/binfmt_misc ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] ||
        cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
}

# ---------------------------------------------------------------------------------------------
# One booted system: C_ARCH, C_ROOT, C_DIR (host-side files), C_PID1, C_PTS (the agent's end of
# the serial line), C_TERMINAL (the simulated terminal's end), API_URL.

# in_container COMMAND...: runs a command inside as root, with a clean environment.
in_container() {
    nsenter -t "$C_PID1" -a -- /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}
# as_user USER COMMAND...: the same as a user, with that user's groups.
as_user() {
    local user=$1
    shift
    in_container setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
}
unit_property() { in_container systemctl show -P "$2" "$1"; }
main_pid() { unit_property pos-agent.service MainPID; }
is_active() { in_container systemctl is-active --quiet "$1"; }
is_inactive() { ! in_container systemctl is-active --quiet "$1"; }

# The container's PID 1 (systemd), a descendant of the nspawn process.
find_pid1() {
    local pid=$1 child
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        if [ "$(cat "/proc/$child/comm" 2>/dev/null)" = systemd ] &&
            grep -Eq '^NSpid:.*[[:space:]]1$' "/proc/$child/status"; then
            echo "$child"
            return 0
        fi
        find_pid1 "$child" && return 0
    done
    return 1
}

# boot ARCH ROOT: the serial pair, the root booted (an overlay keeps ROOT unchanged), systemd up.
boot() {
    C_ARCH=$1 C_ROOT=$2
    C_DIR=$(mktemp -d "$WORK/run-$C_ARCH.XXXX")
    mkdir -p "$C_DIR/inbox"
    # The serial line: two pseudo-terminals joined by socat, like the two ends of a cable.
    socat pty,raw,echo=0,link="$C_DIR/tty-agent" pty,raw,echo=0,link="$C_DIR/tty-terminal" \
        2>"$C_DIR/socat.log" &
    local socat_pid=$!
    on_exit "kill_tree $socat_pid"
    wait_until "socat's pty pair" 20 test -e "$C_DIR/tty-terminal" -a -e "$C_DIR/tty-agent"
    C_PTS=$(readlink -f "$C_DIR/tty-agent")
    C_TERMINAL=$(readlink -f "$C_DIR/tty-terminal")
    # The agent opens its end through the group dialout (gid 20 on Debian, host and container).
    chgrp 20 "$C_PTS" && chmod 0660 "$C_PTS"

    local machine="pos-agent-test-$C_ARCH-$$"
    nice -n "$([ "$C_ARCH" = "$HOST_ARCH" ] && echo 0 || echo 10)" \
        systemd-nspawn --boot --register=no --keep-unit --quiet --console=read-only \
        --volatile=overlay --machine="$machine" --directory="$C_ROOT" \
        --bind="$C_PTS:/dev/ttyPOS" --bind-ro="$C_DIR/inbox:/root/inbox" \
        >"$C_DIR/console.log" 2>&1 &
    C_NSPAWN=$!
    on_exit "shutdown_container $C_NSPAWN"
    local deadline=$((SECONDS + 120))
    until C_PID1=$(find_pid1 "$C_NSPAWN"); do
        kill -0 "$C_NSPAWN" 2>/dev/null || { cat "$C_DIR/console.log" >&2; return 1; }
        [ "$SECONDS" -lt "$deadline" ] || { log "no systemd in the container"; return 1; }
        sleep 0.2
    done
    # `degraded` is fine (units that do not apply in a container); only a boot that never ends
    # is not.
    local state=""
    deadline=$((SECONDS + 300))
    until [ "$state" = running ] || [ "$state" = degraded ] || [ "$SECONDS" -ge "$deadline" ]; do
        # Fails at once while the container's bus is not up yet.
        state=$(timeout 300 nsenter -t "$C_PID1" -a -- /usr/bin/env -i PATH=/usr/bin:/bin \
            systemctl is-system-running --wait 2>/dev/null) || sleep 0.5
    done
    log "$C_ARCH booted: $state (PID 1 is $C_PID1 on the host)"
    case "$state" in running | degraded) ;; *) return 1 ;; esac
}

# release_serial_line: after a kill -9 of the agent, clears the exclusive-open flag (TIOCEXCL)
# it had set on its end of the serial line. A real serial device loses the flag at its last
# close, when the killed process's descriptor goes; socat keeps this pty open, so the flag would
# stay and every later agent fail to open /dev/ttyPOS with "Device or resource busy". Root may
# open a tty despite the flag, and TIOCNXCL clears it.
release_serial_line() {
    python3 -c 'import fcntl, os, sys, termios
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
fcntl.ioctl(fd, termios.TIOCNXCL)
os.close(fd)' "$C_PTS" || fail "cannot clear the exclusive-open flag of $C_PTS"
}

# shutdown_container NSPAWN_PID: a clean poweroff, then whatever is left is killed.
shutdown_container() {
    local nspawn=$1 pid1
    pid1=$(find_pid1 "$nspawn") && kill -RTMIN+4 "$pid1" 2>/dev/null # systemd: poweroff
    local deadline=$((SECONDS + 30))
    while kill -0 "$nspawn" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill_tree "$nspawn"
}

# ---------------------------------------------------------------------------------------------
# The simulators on the host

# start_api: `pos-agent simulate-api` on a free loopback port; sets API_URL and API_LOG.
start_api() {
    API_LOG="$C_DIR/simulate-api.log"
    "$HOST_AGENT" simulate-api --listen 127.0.0.1:0 >"$C_DIR/simulate-api.url" 2>"$API_LOG" &
    local pid=$!
    on_exit "kill -TERM $pid"
    wait_until "simulate-api's URL" 30 test -s "$C_DIR/simulate-api.url"
    API_URL=$(head -n1 "$C_DIR/simulate-api.url")
}
# api_requests [PATTERN]: the requests the simulator has seen so far (one line each).
api_requests() { grep -E "simulate-api: [A-Z]+ ${1:-}" "$API_LOG" || true; }
api_count() { api_requests "${1:-}" | wc -l; }

# start_terminal: `pos-agent simulate-terminal` on the host end of the serial line, fed through a
# FIFO (fd TERMINAL_IN); its replies and notifications land in TERMINAL_OUT.
start_terminal() {
    TERMINAL_OUT="$C_DIR/terminal.out"
    mkfifo "$C_DIR/terminal.in"
    "$HOST_AGENT" simulate-terminal --device "$C_TERMINAL" --reply-timeout 60s \
        <"$C_DIR/terminal.in" >"$TERMINAL_OUT" 2>"$C_DIR/terminal.err" &
    local pid=$!
    exec {TERMINAL_IN}>"$C_DIR/terminal.in"
    on_exit "kill -TERM $pid"
}

# sale AMOUNT_MINOR: the terminal sells; prints the PaymentRequestId of the started sale.
sale() {
    local code before id
    code=$(cat /proc/sys/kernel/random/uuid)
    before=$(wc -l <"$TERMINAL_OUT")
    printf '{"type":"sale","merchant_unique_code":"%s","amount_minor":%s}\n' "$code" "$1" >&"$TERMINAL_IN"
    wait_until "a reply to the sale $code" 90 \
        sh -c "tail -n +$((before + 1)) '$TERMINAL_OUT' | grep -q '$code'"
    id=$(tail -n +"$((before + 1))" "$TERMINAL_OUT" | grep "$code" |
        sed -n 's/.*"payment_request_id":"\([0-9a-f-]*\)".*/\1/p' | head -n1)
    [ -n "$id" ] || fail "the sale was not started: $(tail -n 3 "$TERMINAL_OUT")"
    echo "$id"
}

# ---------------------------------------------------------------------------------------------
# The package and the deployment, as docs/deployment.md tells an operator

# install_package DEB: copied in and installed with dpkg -i, as an operator would.
install_package() {
    cp "$1" "$C_DIR/inbox/"
    in_container dpkg -i "/root/inbox/$(basename "$1")" >"$C_DIR/dpkg-$(basename "$1").log" 2>&1 ||
        { cat "$C_DIR/dpkg-$(basename "$1").log" >&2; return 1; }
}

# write_file PATH MODE: stdin to a file inside the container.
write_file() {
    in_container sh -c "umask 077; mkdir -p \"\$(dirname '$1')\"; cat > '$1'; chmod $2 '$1'"
}

agent_config() {
    cat <<EOF
# written by tests/system/run
[paywall]
physical_api_url = "$API_URL"
payment_api_url = "$API_URL"
allow_insecure_http = true

[connection]
id = "$DEMO_CONNECTION_ID"

[terminal]
id = "$DEMO_TERMINAL_ID"
currency_id = 1

[serial]
device = "/dev/ttyPOS"
ack_timeout = "1s"

[shutdown]
deadline = "30s"

[log]
level = "info"
EOF
}

# deploy: configuration, credentials and the test drop-ins.
deploy() {
    agent_config | write_file /etc/pos-agent/agent.toml 0644
    local key
    if [ "$C_ARCH" = "$HOST_ARCH" ]; then
        for key in "${!API_KEYS[@]}"; do
            printf '%s' "${API_KEYS[$key]}" | write_file "/etc/credstore/pos-agent.$key" 0600
        done
    else
        for key in "${!API_KEYS[@]}"; do
            printf 'POS_AGENT__PAYWALL__%s=%s\n' "${key^^}" "${API_KEYS[$key]}"
        done | write_file /etc/pos-agent/test-emulated-keys.env 0600
        in_container install -D -m 0644 /root/inbox/libqemu-termios2-shim.so \
            /usr/local/lib/libqemu-termios2-shim.so
    fi
    in_container mkdir -p /etc/systemd/system/pos-agent.service.d
    for dropin in "$HERE/dropins/"*.conf; do
        case "$(basename "$dropin")" in
        *emulated*) [ "$C_ARCH" != "$HOST_ARCH" ] || continue ;;
        esac
        write_file "/etc/systemd/system/pos-agent.service.d/$(basename "$dropin")" 0644 <"$dropin"
    done
    in_container systemctl daemon-reload
}

# The agent's journal since the boot, as text or as JSON lines.
journal() { in_container journalctl -u pos-agent.service --no-pager -o cat "$@"; }
