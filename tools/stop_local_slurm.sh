#!/usr/bin/env bash
# Stops the cluster that tools/start_local_slurm.sh started in DIR (slurmd, slurmctld,
# munged, by the pids in DIR) after cancelling its jobs and, with --rm, deletes DIR.  tools/stop_local_slurm.sh DIR [--rm]
set -uo pipefail
dir=${1:?usage: tools/stop_local_slurm.sh DIR [--rm]}
[ -d "${dir}" ] || { echo "stop_local_slurm: no such folder ${dir}" >&2; exit 1; }
# cancel what still runs there (only this cluster's jobs: its own slurm.conf), so no task outlives it
if [ -f "${dir}/slurmctld.pid" ] && kill -0 "$(cat "${dir}/slurmctld.pid")" 2>/dev/null; then
    export SLURM_CONF=${dir}/slurm.conf
    scancel -u "$(id -un)" 2>/dev/null
    for _ in $(seq 1 100); do
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.1
    done
fi
pids=()
for pidfile in "${dir}/slurmd.pid" "${dir}/slurmctld.pid" "${dir}/munge/munged.pid"; do
    [ -f "${pidfile}" ] || continue
    pid=$(cat "${pidfile}")
    if [ -n "${pid}" ] && kill -0 "${pid}" 2>/dev/null; then
        kill -TERM "${pid}" && pids+=("${pid}")
    fi
    rm -f "${pidfile}"
done
for _ in $(seq 1 100); do  # up to 10 s, then SIGKILL
    alive=()
    for pid in "${pids[@]}"; do kill -0 "${pid}" 2>/dev/null && alive+=("${pid}"); done
    [ ${#alive[@]} -eq 0 ] && break
    sleep 0.1
done
for pid in "${alive[@]}"; do kill -KILL "${pid}" 2>/dev/null; done
[ "${2:-}" = --rm ] && rm -rf "${dir}"
exit 0
