#!/bin/bash
# The guest half of the `vm_sleep` test: runs inside the Debian 13 VM at boot (the image's
# vmtest.service, as root), with the run disk mounted at /mnt/run. It says what happens on
# the console as lines "VMTEST <word> ...", which the host half reads; the host answers by
# changing what the guest can see (the NIC's link through QMP), never by typing.
#
# The story, as a person's laptop lives it: the agent installed as the user's service; a
# Telepresence session from a login shell; a real suspend (S3, woken by the RTC alarm) with
# on_sleep = "keep", the session killed right after the resume; a suspend with
# on_sleep = "end-sessions"; the network link lost, the session killed, the link back.
set -u
R=/mnt/run
H=/home/tpuser
N=0

say() { echo "VMTEST $*"; }

as_user() {
    setpriv --reuid=4242 --regid=4242 --init-groups env -i HOME=$H USER=tpuser LOGNAME=tpuser \
        SHELL=/bin/bash PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR=/run/user/4242 \
        DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/4242/bus "$@"
}

diagnose() {
    echo "--- the user's processes: capabilities, and who owns their /proc files"
    for p in $(pgrep -u tpuser); do
        echo "$p $(cat /proc/$p/comm) $(grep CapPrm /proc/$p/status) owner $(stat -c %U /proc/$p/environ)"
    done
    echo "--- telepolice-agent status -v"
    as_user telepolice-agent status -v 2>&1
    echo "--- the agent's journal"
    as_user journalctl --user -u telepolice-agent --no-pager 2>&1 | tail -n 80
    echo "--- session outputs"
    tail -n 20 $H/s*.out 2>/dev/null
}

fail() {
    say "fail $*"
    diagnose
    systemctl poweroff
    exit 1
}

# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 0.5 s until it succeeds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@"; do
        [ $SECONDS -lt $end ] || fail "timed out after ${secs}s waiting until $what"
        sleep 0.5
    done
}

# The state the agent's journal gives the session with pid $1 ("none" before it is seen).
state_of() {
    as_user telepolice-agent history --json 2>/dev/null | python3 -c '
import json, sys
pid = int(sys.argv[1])
try:
    sessions = json.load(sys.stdin)["sessions"]
except Exception:
    sessions = []
print(next((s["state"] for s in sessions if s["process"]["pid"] == pid), "none"))
' "$1"
}

state_is() { [ "$(state_of "$1")" = "$2" ]; }
settled() { case "$(state_of "$1")" in Ended | Cleaned) true ;; *) false ;; esac; }

replicas() { as_user kubectl get deployment app -o 'jsonpath={.spec.replicas}' 2>/dev/null; }
replicas_are() { [ "$(replicas)" = "$1" ]; }

# Starts a session from a login shell (its own TMPDIR and working directory); sets PID.
start_session() {
    N=$((N + 1))
    local out=$H/s$N.out
    as_user bash -l -c "
        export KUBECONFIG=$H/.kube/config TMPDIR=$H/mytmp
        export TELEPRESENCE_STANDIN_HELPER=/usr/local/bin/telepresence_helper
        cd $H/work
        telepresence --swap-deployment app > $out 2>&1 < /dev/null &
        echo \$! > $H/s$N.pid
        wait" > /dev/null 2>&1 &
    wait_for 30 "session $N has a pid" test -s $H/s$N.pid
    PID=$(cat $H/s$N.pid)
    wait_for 180 "session $N (pid $PID) is Active in the agent's journal" state_is "$PID" Active
    wait_for 120 "session $N swapped the original (0 replicas)" replicas_are 0
    say "active $N pid=$PID"
}

suspends() { dmesg 2>/dev/null | grep -c "PM: suspend exit"; }
resumed_since() { [ "$(suspends)" -gt "$1" ]; }

# A real suspend to RAM, woken by the RTC alarm after $1 seconds; returns once resumed.
sleep_for() {
    local before
    before=$(suspends)
    echo 0 > /sys/class/rtc/rtc0/wakealarm
    echo "+$1" > /sys/class/rtc/rtc0/wakealarm
    say "suspending $N"
    systemctl suspend || fail "systemctl suspend refused"
    wait_for 300 "the machine resumed" resumed_since "$before"
    say "resumed $N"
}

carrier_is() { [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = "$1" ]; }

# --- the machine: the NIC (qemu's user network: the host's loopback is 10.0.2.2) ---
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

# --- the programs, as a package would put them; the user's kubeconfig and config ---
install -m 0755 $R/telepolice-agent $R/telepresence $R/telepresence_helper $R/kubectl /usr/local/bin/
install -d -o tpuser -g tpuser $H/.kube $H/.config $H/.config/telepolice-agent $H/work $H/mytmp
install -m 0600 -o tpuser -g tpuser $R/kubeconfig $H/.kube/config
install -m 0644 -o tpuser -g tpuser $R/keep.toml $H/.config/telepolice-agent/config.toml
wait_for 120 "the cluster answers through the NIC" replicas_are 2
wait_for 120 "the user's systemd runs" test -S /run/user/4242/systemd/private

as_user telepolice-agent install || fail "install failed"
wait_for 60 "the service is active" as_user systemctl --user is-active --quiet telepolice-agent
if as_user telepolice-agent status 2>&1 | grep -q "cannot read"; then
    fail "the agent says it cannot see the user's processes: $(as_user telepolice-agent status 2>&1)"
fi
say "ready $(as_user telepolice-agent --version)"

# --- 1. on_sleep = "keep": the session lives through the sleep; killed right after it ---
start_session
sleep_for 15
kill -0 "$PID" 2>/dev/null || fail "the session did not live through the sleep with on_sleep = keep"
replicas_are 0 || fail "the original was changed during a sleep with on_sleep = keep"
kill -9 "$PID"
say "killed $N"
wait_for 120 "the session killed after the resume is Cleaned" state_is "$PID" Cleaned
say "state $N Cleaned"

# --- 2. on_sleep = "end-sessions": ended before the machine sleeps ---
install -m 0644 -o tpuser -g tpuser $R/end-sessions.toml $H/.config/telepolice-agent/config.toml
reloaded() { as_user journalctl --user -u telepolice-agent --no-pager 2>/dev/null | grep -q "configuration reloaded"; }
wait_for 60 "the agent reloaded its config" reloaded
start_session
sleep_for 15
kill -0 "$PID" 2>/dev/null && fail "the session still runs after a sleep with on_sleep = end-sessions"
wait_for 60 "the session ended before the sleep is settled" settled "$PID"
say "state $N $(state_of "$PID")"

# --- 3. the network: link down, the session killed, link up ---
install -m 0644 -o tpuser -g tpuser $R/keep.toml $H/.config/telepolice-agent/config.toml
start_session
say "link-down please"
wait_for 60 "the link is down" carrier_is 0
kill -9 "$PID"
say "killed $N"
wait_for 180 "the repair waits for the cluster" state_is "$PID" Orphaned
say "waiting $N"
wait_for 120 "the link is up" carrier_is 1
wait_for 120 "the session killed while the link was down is Cleaned" state_is "$PID" Cleaned
say "state $N Cleaned"

diagnose
say "done"
systemctl poweroff
