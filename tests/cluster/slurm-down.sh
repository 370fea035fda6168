#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by tests/cluster/slurm-up.sh.
#
# Usage: tests/cluster/slurm-down.sh [STATE_DIR]   (default /tmp/cohortseg-slurm)
#
# Cancels the jobs still queued or running, then stops slurmd, slurmctld and
# munged by the pids in their pid files (STATE_DIR/slurmd.pid,
# STATE_DIR/slurmctld.pid, /run/munge/munged.pid), waiting for each to exit
# (SIGTERM, then SIGKILL after 30 s). Exits 0 when nothing was running.
# STATE_DIR (logs, saved state) and /etc/slurm/slurm.conf are left in place.
set -euo pipefail

STATE_DIR="${1:-/tmp/cohortseg-slurm}"
STATE_DIR="$(realpath -m -- "$STATE_DIR")"
MUNGE_PIDFILE=/run/munge/munged.pid
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

log() { echo "[slurm-down] $*" >&2; }

# pid_of PIDFILE NAME: print the pid if PIDFILE names a live process called NAME.
pid_of() {
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] || return 1
    echo "$pid"
}

stopped_any=0

# stop NAME PIDFILE
stop() {
    local name="$1" pidfile="$2" pid i
    if ! pid="$(pid_of "$pidfile" "$name")"; then
        if [[ -e "$pidfile" ]]; then
            log "$name not running (removing stale $pidfile)"
            rm -f "$pidfile"
        else
            log "$name not running"
        fi
        return 0
    fi
    log "stopping $name (pid $pid)"
    stopped_any=1
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do
        [[ -d "/proc/$pid" ]] || break
        ((i == 300)) && break
        sleep 0.1
    done
    if [[ -d "/proc/$pid" ]]; then
        log "$name (pid $pid) still alive after 30 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            [[ -d "/proc/$pid" ]] || break
            sleep 0.1
        done
    fi
    [[ -d "/proc/$pid" ]] && { log "ERROR: $name (pid $pid) did not exit"; return 1; }
    rm -f "$pidfile"
    log "$name stopped"
}

[[ "$(id -u)" -eq 0 ]] || { echo "[slurm-down] ERROR: must run as root" >&2; exit 1; }

# Cancel unfinished jobs while slurmctld and slurmd still run, so that no
# slurmstepd/job processes outlive the cluster.
if pid_of "$STATE_DIR/slurmctld.pid" slurmctld >/dev/null && command -v squeue >/dev/null; then
    jobs="$(squeue -h -o '%A' -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING 2>/dev/null || true)"
    if [[ -n "$jobs" ]]; then
        log "cancelling jobs: $(echo $jobs)"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 30); do
            [[ -z "$(squeue -h -o '%A' -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING 2>/dev/null || true)" ]] && break
            sleep 1
        done
    fi
fi

rc=0
stop slurmd "$STATE_DIR/slurmd.pid" || rc=1
stop slurmctld "$STATE_DIR/slurmctld.pid" || rc=1
stop munged "$MUNGE_PIDFILE" || rc=1

if ((stopped_any == 0 && rc == 0)); then
    log "nothing was running"
fi
exit "$rc"
