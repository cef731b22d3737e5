# shellcheck shell=bash
# The scenarios of the system test (tests/system/run), in the order they run on one booted
# system. Each is a function `scenario_NAME` that fails through `fail` (tests/system/lib.sh) and
# may leave values for the next ones in files under $C_DIR (a scenario runs in a subshell).
# To add one: write the function, add its name to SCENARIOS_FULL (and SCENARIOS_EMULATED if it
# must also run on the emulated arm64 system), and a row to "Tested under systemd" in
# docs/deployment.md.

SCENARIOS_FULL=(install enable_now operator_access health_gate health_gate_unreachable sale_and_stop stopped_stays_stopped crash
    reload watchdog pending_kinds downgrade_after_stop upgrade_after_stop downgrade_after_kill upgrade
    bad_configuration missing_credential sandbox journal remove_purge)
SCENARIOS_EMULATED=(install enable_now operator_access sale_and_stop stopped_stays_stopped crash
    pending_kinds downgrade_after_stop upgrade_after_stop downgrade_after_kill upgrade)

# What a scenario hands to the next ones.
keep() { printf '%s' "$2" >"$C_DIR/kept.$1"; }
kept() { cat "$C_DIR/kept.$1"; }

scenario_install() {
    install_package "$DEB" || fail "dpkg -i failed"
    in_container getent group pos-agent-operators >/dev/null || fail "no group pos-agent-operators"
    local unit
    for unit in pos-agent.service pos-agent.socket pos-agent-healthy.service; do
        expect_eq "$unit enabled?" "$(in_container systemctl is-enabled "$unit" 2>&1)" disabled
        expect_eq "$unit active?" "$(in_container systemctl is-active "$unit" 2>&1)" inactive
    done
    in_container test ! -e /etc/pos-agent/agent.toml || fail "the package wrote a configuration"
    expect_eq "/etc/credstore mode" "$(in_container stat -c %a /etc/credstore)" 700
}

scenario_enable_now() {
    deploy
    # The line docs/deployment.md gives an operator, as root: check-config reads the credential
    # store (/etc/credstore) the unit's LoadCredential= hands over, so it checks what `run` sees.
    # (The emulated system gets its keys as environment from a test drop-in, not from the store:
    # there the enable runs alone.)
    local out key line='systemctl enable --now pos-agent'
    [ "$C_ARCH" != "$HOST_ARCH" ] || line="pos-agent check-config && $line"
    out=$(in_container sh -c "$line" 2>&1) ||
        fail "$line: $(printf '%s' "$out" | tail -n 5)
$(in_container systemctl status pos-agent --no-pager 2>&1 | tail -n 20)"
    if [ "$C_ARCH" = "$HOST_ARCH" ]; then
        expect_contains "check-config as root" "$out" "<redacted>"
        for key in "${!API_KEYS[@]}"; do
            expect_lacks "check-config as root" "$out" "${API_KEYS[$key]}"
        done
    fi
    expect_eq "pos-agent.service" "$(in_container systemctl is-active pos-agent.service)" active
    expect_eq "pos-agent.socket" "$(in_container systemctl is-active pos-agent.socket)" active
    expect_eq "enabled" "$(in_container systemctl is-enabled pos-agent.service)" enabled
    wait_until "STATUS= says connected" 60 \
        sh -c "nsenter -t $C_PID1 -a systemctl show -P StatusText pos-agent | grep -q '^connected'"
    local status
    status=$(in_container systemctl status pos-agent --no-pager 2>&1) || true
    expect_contains "systemctl status" "$status" "active (running)"
    expect_contains "systemctl status" "$status" "Status: \"connected"
    expect_contains "systemctl status" "$status" "TriggeredBy:"
    keep connection_id "$(in_container pos-agent status --json | sed -n 's/.*"connection_id":"\([^"]*\)".*/\1/p')"
    [ -n "$(kept connection_id)" ] || fail "no connection_id in status --json"
}

scenario_operator_access() {
    in_container useradd --create-home alice
    in_container usermod -aG pos-agent-operators alice
    in_container useradd --create-home mallory
    local out rc=0
    expect_eq "socket" "$(in_container stat -c '%U:%G %a' /run/pos-agent/control.sock)" \
        "root:pos-agent-operators 660"
    expect_eq "/run/pos-agent is a plain directory" "$(in_container stat -c '%F %a' /run/pos-agent)" \
        "directory 755"
    out=$(as_user alice pos-agent status 2>&1) || fail "status as alice: $out"
    expect_contains "status as alice" "$out" "connected"
    local id
    id=$(sale 1250) || exit 1
    out=$(as_user alice pos-agent pending 2>&1) || fail "pending as alice: $out"
    expect_contains "pending as alice" "$out" "$id"
    out=$(as_user alice pos-agent cancel "$id" 2>&1) || fail "cancel as alice: $out"
    wait_until "the cancel of $id at the API" 30 sh -c "grep -q 'POST /api/payment/async/cancel' '$API_LOG'"
    out=$(as_user alice pos-agent pending 2>&1) || fail "pending as alice: $out"
    expect_lacks "pending after the cancel" "$out" "$id"
    audit_records "$id"
    out=$(as_user mallory pos-agent status 2>&1) || rc=$?
    expect_eq "status as a non-member: exit" "$rc" 69
    expect_contains "status as a non-member" "$out" "permission denied"
    expect_contains "status as a non-member" "$out" "pos-agent-operators"
}

# The audit records (docs/operations.md, "Audit records") under the shipped unit: alice's cancel
# of $1 is found by her real uid with her name and its outcome; root's `cancel --all` is told
# apart from it; `pos-agent audit --json` lists both.
audit_records() {
    local id=$1 alice_uid other journal
    alice_uid=$(in_container id -u alice)
    wait_until "alice's cancel in the journal (OPERATOR_UID=$alice_uid)" 20 \
        sh -c "nsenter -t $C_PID1 -a -- journalctl -u pos-agent OPERATOR_UID=$alice_uid -o json | grep -q ."
    other=$(sale 990) || exit 1
    out=$(in_container pos-agent cancel --all 2>&1) || fail "cancel --all as root: $out"
    wait_until "root's cancel --all in the journal" 20 \
        sh -c "nsenter -t $C_PID1 -a -- journalctl -u pos-agent OPERATOR_UID=0 -o json | grep -q ."
    journal=$C_DIR/audit
    in_container journalctl -u pos-agent OPERATOR_UID="$alice_uid" -o json --no-pager >"$journal.alice"
    in_container journalctl -u pos-agent OPERATOR_UID=0 -o json --no-pager >"$journal.root"
    in_container pos-agent audit --json >"$journal.table" || fail "pos-agent audit --json failed"
    python3 - "$journal" "$id" "$other" "$alice_uid" <<'PY' || fail "audit: $(cat "$C_DIR/audit.check")"
import json, sys
base, alice_id, root_id, alice_uid = sys.argv[1:]
problems = []
def entries(name):
    return [json.loads(line) for line in open(f"{base}.{name}") if line.strip()]
alice, root = entries("alice"), entries("root")
if len(alice) != 1:
    problems.append(f"{len(alice)} records for alice's uid, expected 1")
else:
    a = alice[0]
    want = {"OPERATOR_USER": "alice", "OPERATOR_COMMAND": "cancel", "OUTCOME": "confirmed",
            "PAYMENT_REQUEST_ID": alice_id, "ORIGIN": "operator"}
    problems += [f"alice's record {k}={a.get(k)!r}, expected {v!r}" for k, v in want.items() if a.get(k) != v]
    if alice_id not in a.get("MESSAGE", "") or "alice" not in a.get("MESSAGE", ""):
        problems.append(f"alice's message does not stand alone: {a.get('MESSAGE')!r}")
if len(root) != 1:
    problems.append(f"{len(root)} records for uid 0, expected 1")
else:
    r = root[0]
    want = {"OPERATOR_USER": "root", "OPERATOR_COMMAND": "cancel --all", "OUTCOME": "confirmed"}
    problems += [f"root's record {k}={r.get(k)!r}, expected {v!r}" for k, v in want.items() if r.get(k) != v]
    if root_id not in r.get("PAYMENT_REQUEST_IDS", ""):
        problems.append(f"root's record does not name {root_id}: {r.get('PAYMENT_REQUEST_IDS')!r}")
table = json.load(open(f"{base}.table"))
users = {(t.get("operator_user"), t.get("operator_command")) for t in table if t.get("origin") == "operator"}
for want in [("alice", "cancel"), ("root", "cancel --all")]:
    if want not in users:
        problems.append(f"pos-agent audit --json lacks {want}: {sorted(users)}")
if not any(t.get("origin") == "terminal" and t.get("terminal_command") == "sale" for t in table):
    problems.append("pos-agent audit --json lacks the terminal's sales")
open(f"{base}.check", "w").write("; ".join(problems))
sys.exit(1 if problems else 0)
PY
    log "audit: alice (uid $alice_uid) and root told apart; pos-agent audit lists both"
}

# The health gate of an update (docs/deployment.md, "Updates that roll back by themselves"):
# enabled, it makes boot-complete.target wait for a healthy agent. Nothing in a plain Debian boot
# pulls boot-complete.target in (an update system's unit does), so the scenarios start it the
# way docs/deployment.md says to check by hand.
gate_journal() { in_container journalctl -u pos-agent-healthy --no-pager -o cat; }

scenario_health_gate() {
    in_container systemctl enable pos-agent-healthy.service >/dev/null 2>&1 ||
        fail "systemctl enable pos-agent-healthy failed"
    expect_eq "the gate enabled" "$(in_container systemctl is-enabled pos-agent-healthy.service)" enabled
    in_container systemctl start boot-complete.target ||
        fail "boot-complete.target not reached with a healthy agent: $(in_container systemctl status pos-agent-healthy --no-pager 2>&1 | tail -n 8)"
    expect_eq "boot-complete.target" "$(in_container systemctl is-active boot-complete.target)" active
    expect_eq "pos-agent-healthy.service" "$(in_container systemctl is-active pos-agent-healthy.service)" active
    expect_contains "the gate's journal" "$(gate_journal)" \
        "healthy: state directory writable, serial device open, connection connected, terminal link up"
}

# The gate judges the release, not the store's network: the payment API unreachable still
# reaches boot-complete.target, unless a drop-in requires the connection; a serial device that
# does not open fails it whatever is required.
scenario_health_gate_unreachable() {
    in_container systemctl stop boot-complete.target pos-agent-healthy.service
    # The payment API unreachable: the agent pointed at a loopback port nobody listens on; the
    # gate's wait shortened (the documented drop-in) so the stage does not sit out two minutes.
    agent_config | sed "s|$API_URL|http://127.0.0.1:9|" | write_file /etc/pos-agent/agent.toml 0644
    printf '[Service]\nEnvironment=POS_AGENT_HEALTH_WAIT=15s\nTimeoutStartSec=1min\n' |
        write_file /etc/systemd/system/pos-agent-healthy.service.d/50-test-wait.conf 0644
    in_container systemctl daemon-reload
    in_container systemctl restart pos-agent || fail "systemctl restart pos-agent failed"
    in_container systemctl start boot-complete.target ||
        fail "boot-complete.target not reached with the API unreachable and nothing required: $(in_container systemctl status pos-agent-healthy --no-pager 2>&1 | tail -n 8)"
    expect_eq "pos-agent-healthy.service" "$(in_container systemctl is-active pos-agent-healthy.service)" active
    expect_contains "the gate's journal" "$(gate_journal)" "(not required)"

    # The connection required (the documented drop-in): the same agent fails the gate.
    in_container systemctl stop boot-complete.target pos-agent-healthy.service
    printf '[Service]\nEnvironment=POS_AGENT_HEALTH_REQUIRE=connection\n' |
        write_file /etc/systemd/system/pos-agent-healthy.service.d/60-test-require.conf 0644
    in_container systemctl daemon-reload
    ! in_container systemctl start boot-complete.target 2>/dev/null ||
        fail "boot-complete.target was reached while the payment API is unreachable and the connection required"
    expect_eq "boot-complete.target" "$(in_container systemctl is-active boot-complete.target)" inactive
    expect_eq "pos-agent-healthy.service" "$(in_container systemctl is-active pos-agent-healthy.service)" failed
    expect_eq "the gate's exit status" "$(unit_property pos-agent-healthy.service ExecMainStatus)" 75
    expect_contains "the gate's journal" "$(gate_journal)" "unhealthy (waited 15s): connection "

    # Nothing required, the API back, the serial device missing: the release's own failure.
    in_container rm /etc/systemd/system/pos-agent-healthy.service.d/60-test-require.conf
    agent_config | sed "s|/dev/ttyPOS|/dev/ttyPOS-missing|" | write_file /etc/pos-agent/agent.toml 0644
    in_container systemctl daemon-reload
    in_container systemctl reset-failed pos-agent-healthy.service
    in_container systemctl restart pos-agent || fail "systemctl restart pos-agent failed"
    ! in_container systemctl start boot-complete.target 2>/dev/null ||
        fail "boot-complete.target was reached while the serial device is missing"
    expect_eq "boot-complete.target" "$(in_container systemctl is-active boot-complete.target)" inactive
    expect_eq "pos-agent-healthy.service" "$(in_container systemctl is-active pos-agent-healthy.service)" failed
    expect_eq "the gate's exit status" "$(unit_property pos-agent-healthy.service ExecMainStatus)" 75
    expect_contains "the gate's journal" "$(gate_journal)" \
        "unhealthy (waited 15s): serial device not open (cannot open /dev/ttyPOS-missing"

    # Back to a reachable API and the device: the gate passes again.
    agent_config | write_file /etc/pos-agent/agent.toml 0644
    in_container rm /etc/systemd/system/pos-agent-healthy.service.d/50-test-wait.conf
    in_container systemctl daemon-reload
    in_container systemctl reset-failed pos-agent-healthy.service
    in_container systemctl restart pos-agent || fail "systemctl restart pos-agent failed"
    in_container systemctl start boot-complete.target ||
        fail "boot-complete.target not reached once the API and the device are back: $(in_container systemctl status pos-agent-healthy --no-pager 2>&1 | tail -n 8)"
    wait_until "STATUS= says connected" 60 \
        sh -c "nsenter -t $C_PID1 -a systemctl show -P StatusText pos-agent | grep -q '^connected'"
}

scenario_sale_and_stop() {
    local id
    id=$(sale 1990) || exit 1
    keep stopped_payment "$id"
    expect_contains "pending" "$(in_container pos-agent pending 2>&1)" "$id"
    local before
    before=$(api_count)
    in_container systemctl stop pos-agent || fail "systemctl stop failed"
    expect_eq "exit status" "$(unit_property pos-agent.service ExecMainStatus)" 0
    expect_eq "result" "$(unit_property pos-agent.service Result)" success
    local after
    after=$(tail -n +"$((before + 1))" "$API_LOG" | grep -E 'simulate-api: [A-Z]+ ')
    expect_contains "API requests during the stop" "$after" "POST /api/payment/async/cancel -> 200"
    expect_contains "API requests during the stop" "$after" "/api/connection/disconnect"
    local cancel_line disconnect_line
    cancel_line=$(printf '%s\n' "$after" | grep -n 'async/cancel' | head -n1 | cut -d: -f1)
    disconnect_line=$(printf '%s\n' "$after" | grep -n 'connection/disconnect' | head -n1 | cut -d: -f1)
    [ "$cancel_line" -lt "$disconnect_line" ] || fail "the disconnect came before the cancel: $after"
    local story
    story=$(in_container journalctl -u pos-agent --no-pager -o cat "PAYMENT_REQUEST_ID=$id")
    expect_contains "journal of $id" "$story" "sale started: payment $id"
    expect_contains "journal of $id" "$story" "shutdown cancel of payment $id confirmed"
    expect_contains "journal" "$(journal)" "connection $(kept connection_id) deactivated"
}

scenario_stopped_stays_stopped() {
    local before rc=0 out
    before=$(api_count)
    out=$(in_container pos-agent status 2>&1) || rc=$?
    expect_eq "status after the stop: exit" "$rc" 69
    expect_contains "status after the stop" "$out" "pos-agent"
    rc=0
    out=$(as_user alice pos-agent status 2>&1) || rc=$?
    expect_eq "status as an operator after the stop: exit" "$rc" 69
    # Nothing may start: give a wrongly triggered start the time to show.
    sleep 3
    expect_eq "pos-agent.service" "$(in_container systemctl is-active pos-agent.service)" inactive
    expect_eq "pos-agent.socket" "$(in_container systemctl is-active pos-agent.socket)" inactive
    expect_eq "API requests after the stop" "$(api_count)" "$before"
}

start_agent() {
    in_container systemctl start pos-agent || fail "systemctl start: $(in_container systemctl status pos-agent --no-pager 2>&1 | tail -n 15)"
    wait_until "STATUS= says connected" 60 \
        sh -c "nsenter -t $C_PID1 -a systemctl show -P StatusText pos-agent | grep -q '^connected'"
}

# restarted_after OLD_PID SECONDS: waits for systemd's restart to bring up a new, ready process.
restarted_after() {
    wait_until "a new main process" "$2" \
        sh -c "p=\$(nsenter -t $C_PID1 -a systemctl show -P MainPID pos-agent); [ \"\$p\" != 0 ] && [ \"\$p\" != $1 ]"
    wait_until "the restarted agent is active" 60 is_active pos-agent.service
    wait_until "STATUS= says connected" 60 \
        sh -c "nsenter -t $C_PID1 -a systemctl show -P StatusText pos-agent | grep -q '^connected'"
}

scenario_crash() {
    start_agent
    local id old restarts
    id=$(sale 4200) || exit 1
    keep crash_payment "$id"
    old=$(main_pid)
    restarts=$(unit_property pos-agent.service NRestarts)
    in_container sh -c "kill -KILL $old"
    release_serial_line
    restarted_after "$old" 60
    expect_eq "restarts" "$(unit_property pos-agent.service NRestarts)" "$((restarts + 1))"
    expect_contains "pending after kill -9" "$(in_container pos-agent pending 2>&1)" "$id"
    expect_contains "connection after kill -9" "$(in_container pos-agent status --json)" "\"connection_id\":\"$(kept connection_id)\""
    # DynamicUser= keeps the state in /var/lib/private; the emulated system runs without it.
    local state_dir=/var/lib/private/pos-agent
    [ "$C_ARCH" = "$HOST_ARCH" ] || state_dir=/var/lib/pos-agent
    expect_contains "where the state is" "$(in_container ls "$state_dir")" "state"
}

scenario_reload() {
    # `systemctl reload` (ExecReload= sends SIGHUP): the same process goes on, the payment left
    # by the crash scenario still pending, and the journal says what was reloaded.
    local id old out
    id=$(kept crash_payment)
    old=$(main_pid)
    out=$(in_container systemctl reload pos-agent 2>&1) || fail "systemctl reload: $out"
    wait_until "the reload in the journal" 30 \
        sh -c "nsenter -t $C_PID1 -a journalctl -u pos-agent --no-pager -o cat | grep -q 'configuration reloaded'"
    expect_eq "main pid after reload" "$(main_pid)" "$old"
    expect_eq "active after reload" "$(in_container systemctl is-active pos-agent.service)" active
    expect_contains "pending after reload" "$(in_container pos-agent pending 2>&1)" "$id"
}

scenario_watchdog() {
    local id old
    id=$(kept crash_payment)
    old=$(main_pid)
    in_container sh -c "kill -STOP $old"
    # WatchdogSec=20s, then SIGABRT, then RestartSec=5s.
    restarted_after "$old" 180
    release_serial_line
    expect_contains "journal" "$(in_container journalctl -u pos-agent --no-pager -o cat)" "Watchdog timeout"
    expect_contains "pending after the watchdog" "$(in_container pos-agent pending 2>&1)" "$id"
    expect_contains "connection after the watchdog" "$(in_container pos-agent status --json)" "\"connection_id\":\"$(kept connection_id)\""
}

# ---------------------------------------------------------------------------------------------
# Rolling back to the previous release and forward again (docs/deployment.md, "Upgrade and
# rollback"; docs/state.md): the package of packaging/previous-release ($DEB_PREVIOUS, built from
# git by tests/system/run) installed over this release with dpkg -i, as an A/B rollback puts the
# older binary on the newer one's state, and this release installed over it again. Three kinds
# of pending payment ride along: a started sale, one whose cancel the API refused (it stays
# pending, flagged), and an abandoned sale (its answer lost; its lookups fail until the end of
# `upgrade`, so it stays abandoned across every stop and start, and is then cancelled with
# reason `abandoned`, by design: docs/behaviour.md). After each start: the unit active, every
# payment listed by `pos-agent pending`, and at the simulator nothing cancelled that should not
# be.

# sim_control METHOD PATH [JSON]: the simulator's control endpoints (docs/payment-api.md).
sim_control() {
    curl -sSf -X "$1" "$API_URL/_sim/$2" ${3:+-d "$3"} >/dev/null || fail "the simulator's /_sim/$2 refused: $3"
}
# sim_payment KEY: "PaymentRequestId MerchantUniqueCode PaymentStatusId" of the simulator's
# payment with that id or code (8 = cancelled).
sim_payment() {
    curl -sSf "$API_URL/_sim/state" | python3 -c '
import json, sys
for p in json.load(sys.stdin)["result"]["payments"]:
    if sys.argv[1] in (p["PaymentRequestId"], p["MerchantUniqueCode"]):
        print(p["PaymentRequestId"], p["MerchantUniqueCode"], p["PaymentStatusId"])' "$1"
}
sim_status() { sim_payment "$1" | awk '{ print $3 }'; }
cancels() { api_count /api/payment/async/cancel; }
is_cancelled_at_api() { [ "$(sim_status "$1")" = 8 ]; }
not_pending() { ! in_container pos-agent pending 2>&1 | grep -q "$1"; }

# abandoned_sale AMOUNT_MINOR: a sale the API creates but whose answer is lost (and whose lookup
# fails): the terminal hears api_unavailable at the sale deadline; prints the sale's code.
abandoned_sale() {
    local code before
    sim_control POST fault '{"method":"POST","path":"/api/payment/async/sale","kind":"create_then_drop"}'
    code=$(cat /proc/sys/kernel/random/uuid)
    before=$(wc -l <"$TERMINAL_OUT")
    printf '{"type":"sale","merchant_unique_code":"%s","amount_minor":%s}\n' "$code" "$1" >&"$TERMINAL_IN"
    wait_until "the terminal told api_unavailable for the sale $code" 120 \
        sh -c "tail -n +$((before + 1)) '$TERMINAL_OUT' | grep -q 'api_unavailable'"
    echo "$code"
}

# expect_carried WHAT: every payment of pending_kinds still pending here (`pos-agent pending`
# lists the started and refused ones by id, the abandoned sale by its code), and none of them
# cancelled at the simulator.
expect_carried() {
    local what=$1 out key
    out=$(in_container pos-agent pending 2>&1) || fail "$what: pos-agent pending: $out"
    for key in "$(kept roll_refused)" "$(kept roll_abandoned)" ${ROLL_STARTED:+"$ROLL_STARTED"}; do
        expect_contains "$what: pos-agent pending" "$out" "$key"
        [ "$(sim_status "$key")" != 8 ] || fail "$what: $key was cancelled at the API"
    done
    expect_contains "$what: pos-agent pending (the refused cancel)" "$out" "refused"
}

# to_package DEB VERSION: dpkg -i, as an operator (an older version too: dpkg -i downgrades
# with a warning and needs no flag); the version it leaves installed.
to_package() {
    install_package "$1" || fail "dpkg -i $(basename "$1") failed"
    expect_eq "installed version" "$(in_container dpkg-query -W -f='${Version}' pos-agent)" "$2-1"
    expect_contains "pos-agent --version" "$(in_container pos-agent --version)" "pos-agent $2"
}

# kill_and_stop: kill -9 of the agent, then a stop, so that systemd does not restart it.
kill_and_stop() {
    in_container systemctl kill -s KILL pos-agent.service || fail "systemctl kill -s KILL failed"
    release_serial_line
    in_container systemctl stop pos-agent.service pos-agent.socket
    wait_until "the agent stopped" 30 is_inactive pos-agent.service
}

scenario_pending_kinds() {
    is_active pos-agent.service || start_agent
    # The lookups of a sale whose answer was lost fail until `upgrade` clears this.
    sim_control POST fault '{"method":"POST","path":"/api/payment/list","kind":"http_500","times":null}'
    local started refused code out rc=0
    started=$(sale 1111) || exit 1
    refused=$(sale 2222) || exit 1
    sim_control POST fault '{"method":"POST","path":"/api/payment/async/cancel","kind":"reply","body":{"Result":null,"ErrorCode":1,"Failed":true,"Message":"Cancel is not allowed now.","ClientMessage":"CancelNotAllowed","Succeeded":false}}'
    out=$(in_container pos-agent cancel "$refused" 2>&1) || rc=$?
    expect_eq "the refused cancel: exit" "$rc" 1
    code=$(abandoned_sale 3333) || exit 1
    [ -n "$(sim_payment "$code")" ] || fail "the abandoned sale's payment was not created at the simulator"
    keep roll_started "$started"
    keep roll_refused "$refused"
    keep roll_abandoned "$code"
    ROLL_STARTED=$started expect_carried "made pending"
    expect_contains "pos-agent pending" "$(in_container pos-agent pending 2>&1)" "abandoned sales"
}

# A clean stop cancels what it can (docs/behaviour.md, "Shutdown"): the started sale (reason
# shutdown); the refused and the abandoned ones stay for the previous release.
scenario_downgrade_after_stop() {
    local started mark
    started=$(kept roll_started)
    in_container systemctl stop pos-agent || fail "systemctl stop failed"
    expect_eq "exit status of the clean stop" "$(unit_property pos-agent.service ExecMainStatus)" 0
    expect_eq "the started sale after the clean stop" "$(sim_status "$started")" 8
    mark=$(cancels)
    to_package "$DEB_PREVIOUS" "$PREVIOUS_VERSION"
    expect_contains "dpkg -i of the older package" "$(cat "$C_DIR/dpkg-$(basename "$DEB_PREVIOUS").log")" "downgrading"
    start_agent
    expect_carried "the previous release after a clean stop"
    expect_lacks "pending after the clean stop" "$(in_container pos-agent pending 2>&1)" "$started"
    expect_eq "cancels sent by the previous release" "$(cancels)" "$mark"
}

scenario_upgrade_after_stop() {
    local mark
    mark=$(cancels)
    in_container systemctl stop pos-agent || fail "systemctl stop of the previous release failed"
    expect_eq "exit status of its clean stop" "$(unit_property pos-agent.service ExecMainStatus)" 0
    to_package "$DEB" "$VERSION"
    start_agent
    expect_carried "this release after the previous one's clean stop"
    expect_eq "cancels sent by either" "$(cancels)" "$mark"
}

# After a kill -9 every payment stays pending, the started sale too, and so does the connection.
scenario_downgrade_after_kill() {
    local started connection mark
    started=$(sale 4444) || exit 1
    keep roll_started "$started"
    connection=$(in_container pos-agent status --json | sed -n 's/.*"connection_id":"\([^"]*\)".*/\1/p')
    keep roll_connection "$connection"
    mark=$(cancels)
    kill_and_stop
    to_package "$DEB_PREVIOUS" "$PREVIOUS_VERSION"
    start_agent
    ROLL_STARTED=$started expect_carried "the previous release after kill -9"
    expect_contains "connection" "$(in_container pos-agent status --json)" "\"connection_id\":\"$connection\""
    expect_eq "cancels sent by the previous release" "$(cancels)" "$mark"
}

# This release over the previous one (a genuinely newer build): the package restarts nothing;
# the previous release has no restart that keeps payments, so a kill -9 and systemd's Restart=
# bring up the new binary; then this release's own restart --keep-pending. At the end the API
# answers lookups again: the abandoned sale is cancelled (reason abandoned), the others stay.
scenario_upgrade() {
    local started old mark abandoned_id
    started=$(kept roll_started)
    old=$(main_pid)
    mark=$(cancels)
    to_package "$DEB" "$VERSION"
    expect_eq "main PID after the upgrade" "$(main_pid)" "$old"
    is_active pos-agent.service || fail "the upgrade stopped the agent"
    ROLL_STARTED=$started expect_carried "the previous release, this one installed"
    in_container systemctl kill -s KILL pos-agent.service || fail "systemctl kill -s KILL failed"
    release_serial_line
    restarted_after "$old" 60
    expect_contains "the running daemon" "$(in_container pos-agent status --json)" "\"version\":\"$VERSION\""
    ROLL_STARTED=$started expect_carried "this release after the previous one's kill -9"
    expect_contains "connection" "$(in_container pos-agent status --json)" "\"connection_id\":\"$(kept roll_connection)\""
    expect_eq "cancels sent across the upgrade" "$(cancels)" "$mark"

    ROLL_STARTED=$started restart_keep_pending

    abandoned_id=$(sim_payment "$(kept roll_abandoned)" | awk '{ print $1 }')
    sim_control DELETE faults
    wait_until "the abandoned sale's payment cancelled" 120 is_cancelled_at_api "$abandoned_id"
    wait_until "the abandoned sale settled" 60 not_pending "$(kept roll_abandoned)"
    expect_eq "cancels: the abandoned sale's" "$(cancels)" "$((mark + 1))"
    local out
    out=$(in_container pos-agent pending 2>&1)
    expect_contains "pending at the end" "$out" "$started"
    expect_contains "pending at the end" "$out" "$(kept roll_refused)"
}

# ---- The restart that keeps pending payments (`pos-agent restart --keep-pending`,
# docs/deployment.md, "Upgrade and rollback"): the payments of expect_carried pending before and
# after, a new main process (the unit restarts it on exit status 3), no cancel sent, the
# connection kept.
restart_keep_pending() {
    local old mark out
    old=$(main_pid)
    mark=$(cancels)
    expect_carried "before restart --keep-pending"
    out=$(in_container pos-agent restart --keep-pending 2>&1) || fail "pos-agent restart --keep-pending: $out"
    restarted_after "$old" 60
    expect_carried "after restart --keep-pending"
    expect_eq "cancels sent by restart --keep-pending" "$(cancels)" "$mark"
    expect_contains "connection after restart --keep-pending" "$(in_container pos-agent status --json)" \
        "\"connection_id\":\"$(kept roll_connection)\""
}

# expect_start_failure WHAT NEEDLE: the start fails with exit 78, systemctl status names NEEDLE,
# and systemd does not restart it.
expect_start_failure() {
    local restarts status
    in_container systemctl reset-failed pos-agent.service 2>/dev/null || true
    restarts=$(unit_property pos-agent.service NRestarts)
    ! in_container systemctl restart pos-agent 2>/dev/null || fail "$1: the start succeeded"
    expect_eq "$1: exit status" "$(unit_property pos-agent.service ExecMainStatus)" 78
    expect_eq "$1: state" "$(in_container systemctl is-active pos-agent.service)" failed
    status=$(in_container systemctl status pos-agent --no-pager -n 20 2>&1) || true
    expect_contains "$1: systemctl status" "$status" "$2"
    sleep 7 # longer than RestartSec=5s: a restart would have happened
    expect_eq "$1: restarts" "$(unit_property pos-agent.service NRestarts)" "$restarts"
    expect_eq "$1: state later" "$(in_container systemctl is-active pos-agent.service)" failed
    expect_eq "$1: socket" "$(in_container systemctl is-active pos-agent.socket)" inactive
}

scenario_bad_configuration() {
    agent_config | sed 's/^ack_timeout = .*/ack_timeout = "soon"/' | write_file /etc/pos-agent/agent.toml 0644
    expect_start_failure "bad configuration" "serial.ack_timeout"
    agent_config | write_file /etc/pos-agent/agent.toml 0644
}

scenario_missing_credential() {
    in_container mv /etc/credstore/pos-agent.api_key_private /root/api_key_private
    expect_start_failure "missing credential" "api_key_private"
    in_container mv /root/api_key_private /etc/credstore/pos-agent.api_key_private
    in_container systemctl reset-failed pos-agent.service
    start_agent
}

scenario_sandbox() {
    local report exposure
    report=$(in_container systemd-analyze security --no-pager pos-agent.service 2>&1) ||
        fail "systemd-analyze security: $report"
    exposure=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for pos-agent.service: \([0-9.]*\).*/\1/p')
    [ -n "$exposure" ] || fail "no overall exposure in: $report"
    log "systemd-analyze security (loaded unit): $exposure"
    keep exposure "$exposure"
    awk -v e="$exposure" 'BEGIN { exit !(e <= 1.5) }' || fail "overall exposure $exposure > 1.5"
}

scenario_journal() {
    # Every pos-agent line with a subject field names its value in its MESSAGE; the fields are
    # there in upper case; no credential value anywhere in the journal.
    in_container journalctl --no-pager -o json SYSLOG_IDENTIFIER=pos-agent >"$C_DIR/journal.json"
    python3 - "$C_DIR/journal.json" <<'PY' || fail "journal: $(cat "$C_DIR/journal.check")"
import json, sys
subject = ["PAYMENT_REQUEST_ID", "MERCHANT_UNIQUE_CODE", "CONNECTION_ID", "SERIAL_REQUEST_ID", "LINK_STATE"]
seen, bad = set(), []
for line in open(sys.argv[1]):
    entry = json.loads(line)
    message = entry.get("MESSAGE", "")
    for field in subject:
        value = entry.get(field)
        if isinstance(value, str):
            seen.add(field)
            if value not in message:
                bad.append(f"{field}={value} not in: {message}")
missing = {"PAYMENT_REQUEST_ID", "MERCHANT_UNIQUE_CODE", "CONNECTION_ID", "LINK_STATE"} - seen
out = open(sys.argv[1].replace("journal.json", "journal.check"), "w")
if bad or missing:
    out.write("; ".join(bad[:5]) + (f" fields never seen: {sorted(missing)}" if missing else ""))
    sys.exit(1)
PY
    local all secret
    all=$(in_container journalctl --no-pager -o verbose)
    for secret in "${API_KEYS[@]}"; do
        expect_lacks "the whole journal" "$all" "$secret"
    done
}

scenario_remove_purge() {
    local state_before
    is_active pos-agent.service || start_agent
    in_container dpkg -r pos-agent >"$C_DIR/dpkg-remove.log" 2>&1 || fail "dpkg -r: $(cat "$C_DIR/dpkg-remove.log")"
    expect_eq "after remove: service" "$(in_container systemctl is-active pos-agent.service)" inactive
    in_container test ! -e /usr/bin/pos-agent || fail "remove left /usr/bin/pos-agent"
    in_container test ! -e /etc/systemd/system/boot-complete.target.requires/pos-agent-healthy.service ||
        fail "remove left the health gate enabled: boot-complete.target would require a removed unit"
    in_container test -e /etc/pos-agent/agent.toml || fail "remove deleted agent.toml"
    in_container test -e /etc/credstore/pos-agent.api_key_private || fail "remove deleted the keys"
    # Every kind of credential the docs name, plain and encrypted (purge removes them unread),
    # and a file of someone else's that purge must leave alone.
    in_container sh -c 'mkdir -p -m 0700 /etc/credstore.encrypted &&
        printf "Password = \"x\"\n" >/etc/credstore/pos-agent.service_parameters &&
        for c in service_parameters api_key_private; do printf x >/etc/credstore.encrypted/pos-agent.$c; done &&
        printf x >/etc/credstore/other-service.key' || fail "cannot write the test credentials"
    state_before=$(in_container ls /var/lib/private/pos-agent)
    in_container dpkg --purge pos-agent >"$C_DIR/dpkg-purge.log" 2>&1 || fail "dpkg --purge: $(cat "$C_DIR/dpkg-purge.log")"
    in_container test ! -e /etc/pos-agent/agent.toml || fail "purge left agent.toml"
    in_container sh -c '! ls /etc/credstore/pos-agent.* 2>/dev/null' || fail "purge left the keys"
    in_container sh -c '! ls /etc/credstore.encrypted/pos-agent.* 2>/dev/null' ||
        fail "purge left encrypted credentials"
    in_container test -e /etc/credstore/other-service.key || fail "purge removed another service's file"
    in_container rm -f /etc/credstore/other-service.key
    expect_eq "state after purge" "$(in_container ls /var/lib/private/pos-agent)" "$state_before"
    in_container getent group pos-agent-operators >/dev/null || fail "purge removed the group"
}
