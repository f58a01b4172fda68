#!/usr/bin/env bash
# Start a single-node SLURM on this machine for trying the SLURM path and for CI: munged, slurmctld and
# slurmd from Debian's packages (apt-get install -y slurmctld slurmd slurm-client munge), everything on
# 127.0.0.1. Needs root. Idempotent: a daemon that already runs is left alone. What this script starts is
# recorded under /run/ppp_dist_slurm, and scripts/stop_slurm.sh stops exactly that. docs/cluster.md,
# "Try SLURM on one machine".
#
# The node gets this machine's CPUs (nproc) and about 90 % of its available memory; jobs must ask for no
# more (--mem). There are no cgroups: memory and CPU limits are not enforced.
set -euo pipefail
NODE=ppp-node
PARTITION=debug
CONF=/etc/slurm/slurm.conf
MARK="# written by ppp_dist scripts/start_slurm.sh"
RECORD=/run/ppp_dist_slurm
CTLD_STATE=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd

fail() {
    echo "start_slurm.sh: $*" >&2
    exit 2
}

[ "$(id -u)" = 0 ] || fail "needs root (it starts munged, slurmctld and slurmd)"
for bin in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/bin/sinfo; do
    [ -x "$bin" ] || fail "SLURM is not installed ($bin missing): apt-get install -y slurmctld slurmd slurm-client munge"
done
mkdir -p "$RECORD"

alive() {  # alive PIDFILE: the process the pid file names runs
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: run COMMAND until it succeeds
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "$what did not come up within $seconds s"
}

munge_works() { munge -n | unmunge; }
ctld_answers() { [ -e "$CONF" ] && scontrol ping 2>/dev/null | grep -q "is UP"; }
node_ready() {
    case $(sinfo -h -n "$NODE" -o %t) in
        idle | mix | alloc) return 0 ;;
        *) return 1 ;;
    esac
}

# --- munged ----------------------------------------------------------------------------------------------
if ! munge_works >/dev/null 2>&1; then
    if [ ! -s /etc/munge/munge.key ]; then
        install -d -o munge -g munge -m 700 /etc/munge
        (umask 077 && dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none)
        chown munge:munge /etc/munge/munge.key
    fi
    chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 munged munge_works
    cp /run/munge/munged.pid "$RECORD/munged.pid"
    echo "started munged (pid $(cat "$RECORD/munged.pid"))" >&2
fi

# --- slurm.conf and slurmctld ---------------------------------------------------------------------------
if ! ctld_answers; then
    if [ -e "$CONF" ] && ! head -n 1 "$CONF" | grep -qF "$MARK"; then
        fail "$CONF exists and was not written by this script; this machine has its own SLURM set-up"
    fi
    cpus=$(nproc)
    memory=$(awk '/^MemAvailable:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
    mkdir -p /etc/slurm
    cat >"$CONF" <<EOF
$MARK: one node on 127.0.0.1
ClusterName=ppp
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
KillWait=5
StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$NODE NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    # a fresh state: no jobs or node states left from an earlier run
    rm -rf "$CTLD_STATE" "$SLURMD_SPOOL"
    install -d -o slurm -g slurm "$CTLD_STATE" /var/log/slurm
    install -d "$SLURMD_SPOOL" /run/slurm
    chown slurm:slurm /run/slurm
    /usr/sbin/slurmctld
    wait_for 20 slurmctld ctld_answers
    cp /run/slurm/slurmctld.pid "$RECORD/slurmctld.pid"
    echo "started slurmctld (pid $(cat "$RECORD/slurmctld.pid")): node $NODE, $cpus CPUs, ${memory} MB" >&2
fi

# --- slurmd ----------------------------------------------------------------------------------------------
if ! alive /run/slurm/slurmd.pid; then
    /usr/sbin/slurmd -N "$NODE"
    wait_for 20 slurmd alive /run/slurm/slurmd.pid
    cp /run/slurm/slurmd.pid "$RECORD/slurmd.pid"
    echo "started slurmd (pid $(cat "$RECORD/slurmd.pid"))" >&2
fi
wait_for 30 "node $NODE" node_ready
sinfo -h -o "SLURM is up: partition %P, node %N, %c CPUs, %m MB, state %t"
