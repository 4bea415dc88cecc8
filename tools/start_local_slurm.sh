#!/usr/bin/env bash
# Starts a single-node Slurm cluster on this machine from Debian's slurm-wlm and munge,
# for tests and for trying the recipes' slurm back-end (cmd.sh) without a cluster:
#   tools/start_local_slurm.sh [DIR]     # prints DIR; then: . DIR/env.sh; sbatch ...
#   tools/stop_local_slurm.sh DIR
# Everything lives in DIR (a new temporary folder by default): slurm.conf, the munge key
# and socket, state, spool, pid and log files. Process tracking needs no cgroups
# (proctrack/linuxproc, task/none); the node has this machine's CPUs and ~90 % of its
# memory; no accounting database (per-task exit codes come from the job back-end's
# status files). Needs root (SlurmUser=root) and the packages slurm-wlm and munge
# (tools/install_system_packages.sh). Exit status 3: cannot start here (not root,
# packages missing); 1: a daemon failed (its log is printed).
set -euo pipefail

die() { echo "start_local_slurm: $*" >&2; exit "${2:-1}"; }
[ "$(id -u)" = 0 ] || die "needs root (SlurmUser=root); running as uid $(id -u)" 3
for exe in munged slurmctld slurmd sbatch sinfo scontrol; do
    command -v "${exe}" >/dev/null 2>&1 || die "${exe} not found: install slurm-wlm and munge (tools/install_system_packages.sh)" 3
done

dir=${1:-$(mktemp -d /tmp/local_slurm.XXXXXX)}
mkdir -p "${dir}"
dir=$(cd "${dir}" && pwd)
[ -e "${dir}/slurmctld.pid" ] && die "${dir} already holds a cluster (stop it with tools/stop_local_slurm.sh ${dir})"
mkdir -p "${dir}/munge" "${dir}/state" "${dir}/spool" "${dir}/log"
chmod 700 "${dir}/munge"

# munge: own key, socket and logs
dd if=/dev/urandom of="${dir}/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "${dir}/munge/munge.key"
munged --force --key-file="${dir}/munge/munge.key" --socket="${dir}/munge/munge.sock" \
    --pid-file="${dir}/munge/munged.pid" --log-file="${dir}/log/munged.log" \
    --seed-file="${dir}/munge/munged.seed" \
    || { cat "${dir}/log/munged.log" >&2 || true; die "munged failed to start"; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
node=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
cat > "${dir}/slurm.conf" <<CONF
# written by tools/start_local_slurm.sh
ClusterName=localcluster
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${dir}/munge/munge.sock
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${dir}/spool
SlurmctldPidFile=${dir}/slurmctld.pid
SlurmdPidFile=${dir}/slurmd.pid
SlurmctldLogFile=${dir}/log/slurmctld.log
SlurmdLogFile=${dir}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=600
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MaxArraySize=10001
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
printf 'export SLURM_CONF=%s\n' "${dir}/slurm.conf" > "${dir}/env.sh"
export SLURM_CONF=${dir}/slurm.conf

slurmctld -c -f "${SLURM_CONF}" || { cat "${dir}/log/slurmctld.log" >&2 || true; die "slurmctld failed to start"; }
slurmd -f "${SLURM_CONF}" -N "${node}" || { cat "${dir}/log/slurmd.log" >&2 || true; die "slurmd failed to start"; }

# wait until the node accepts jobs
for _ in $(seq 1 60); do
    state=$(sinfo -h -N -n "${node}" -o '%t' 2>/dev/null || true)
    case "${state}" in idle|mix|alloc) echo "${dir}"; exit 0 ;; esac
    sleep 0.5
done
tail -n 20 "${dir}/log/slurmctld.log" "${dir}/log/slurmd.log" >&2 || true
die "node ${node} not idle after 30 s (state: '${state:-none}'); logs in ${dir}/log"
