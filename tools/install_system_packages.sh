#!/usr/bin/env bash
# Installs the Debian packages the recipes use (espeak-ng, sox, flac, sctk) and those of the
# single-node Slurm cluster of the tests and of tools/start_local_slurm.sh (slurm-wlm, munge)
# when missing.
set -euo pipefail
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v sox >/dev/null 2>&1 || missing+=(sox)
command -v flac >/dev/null 2>&1 || missing+=(flac)
[ -x /usr/lib/sctk/bin/sclite ] || command -v sclite >/dev/null 2>&1 || missing+=(sctk)
{ command -v slurmctld && command -v slurmd && command -v sbatch; } >/dev/null 2>&1 || missing+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || missing+=(munge)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "Installing Debian packages: ${missing[*]}"
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "ERROR: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo_cmd=sudo
fi
export DEBIAN_FRONTEND=noninteractive
${sudo_cmd} apt-get update -qq
${sudo_cmd} apt-get install -y -qq --no-install-recommends "${missing[@]}"
