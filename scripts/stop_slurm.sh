#!/usr/bin/env bash
# Stop what scripts/start_slurm.sh started, and nothing else: cancel the jobs of that cluster, then stop
# slurmd, slurmctld and munged by the pids start_slurm.sh recorded in /run/ppp_dist_slurm. Daemons it did
# not start (already running before) keep running. Needs root. Idempotent.
set -euo pipefail
RECORD=/run/ppp_dist_slurm

[ "$(id -u)" = 0 ] || { echo "stop_slurm.sh: needs root" >&2; exit 2; }
if ! compgen -G "$RECORD/*.pid" >/dev/null; then
    echo "stop_slurm.sh: nothing to stop (start_slurm.sh started no SLURM daemon that still runs)" >&2
    exit 0
fi

recorded() {  # recorded NAME: the pid start_slurm.sh recorded for daemon NAME, if that daemon still runs
    local pid
    [ -s "$RECORD/$1.pid" ] || return 1
    pid=$(cat "$RECORD/$1.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # the pid must still be that daemon (pids are reused)
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
    printf '%s' "$pid"
}

if pid=$(recorded slurmctld); then
    # the cluster is ours: cancel its jobs and give them KillWait to end
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086  # one job id per word
        scancel $jobs || true
        for _ in $(seq 1 100); do
            [ -z "$(squeue -h -o %i 2>/dev/null || true)" ] && break
            sleep 0.2
        done
    fi
fi

for name in slurmd slurmctld munged; do
    if pid=$(recorded "$name"); then
        kill -TERM "$pid"
        for _ in $(seq 1 75); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid"
            echo "stop_slurm.sh: $name (pid $pid) ignored TERM for 15 s; killed" >&2
        else
            echo "stopped $name (pid $pid)" >&2
        fi
    fi
    rm -f "$RECORD/$name.pid"
done
