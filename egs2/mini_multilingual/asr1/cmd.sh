# Where the stages' jobs run (ESPnet's cmd.sh convention); local/asr.sh sources this file.
#   local: processes on this machine; logs in exp/logs/<job>.<k>.log
#   slurm: one Slurm array job per stage step (a task per job group, one per training);
#          sbatch options (partition, time, memory, GPUs, account) in conf/slurm.conf
# Override per run: ./run.sh --cmd_backend slurm
# The multilingual recipe runs on a laptop CPU: local by default. To try the slurm back-end without a
# cluster: tools/start_local_slurm.sh prints DIR; . DIR/env.sh; ./run.sh --cmd_backend slurm
: "${cmd_backend:=local}"

case "${cmd_backend}" in
    local)
        train_cmd="local"            # CPU trainings (stages 3, 4, 7 with --ngpu 0)
        cuda_cmd="local --gpu 1"     # GPU jobs: trainings with --ngpu N (asr.sh adds --gpu N), --gpu_inference true
        decode_cmd="local"           # CPU extraction, decoding, merging, analysis
        ;;
    slurm)
        train_cmd="slurm --config conf/slurm.conf"
        cuda_cmd="slurm --config conf/slurm.conf --gpu 1"
        decode_cmd="slurm --config conf/slurm.conf"
        ;;
    *)
        echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (local or slurm)" >&2
        return 1
        ;;
esac
