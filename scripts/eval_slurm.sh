#!/usr/bin/env bash
# Runs an AlphaNAS evaluator command as a Slurm job and relays its result.
#
# Usage, as the command evaluator:
#   alphanas search --evaluator command --eval-cmd "scripts/eval_slurm.sh python3 train.py --steps 2000"
#
# Everything after the script name is the program and its arguments; they are passed to Slurm
# as separate words and never through a shell string. The job receives the architecture JSON on
# stdin and in ALPHANAS_ARCH_FILE, and ALPHANAS_TRIAL_ID, as with a local command. The job's
# stdout, stderr and exit status come back, so the last stdout line is the metrics object.
#
# Settings (environment variables):
#   ALPHANAS_SLURM_MODE    srun (default): one interactive step, output streamed back.
#                          sbatch: a batch job submitted with `sbatch --wait`; its output
#                          files are printed when it ends.
#   ALPHANAS_SLURM_ARGS    extra options for srun or sbatch, split on whitespace
#                          (for example "--partition=gpu --gres=gpu:1 --time=01:00:00").
#   ALPHANAS_SHARED_DIR    folder on a file system that the compute nodes also mount, for the
#                          architecture file and batch outputs (default: ./.alphanas-slurm).
#                          The evaluator's own temporary file is node-local, so it is copied.
#
# When AlphaNAS kills this script on --eval-timeout, srun's job step ends with it. An sbatch
# job is cancelled by the trap below on SIGTERM/SIGINT only; SIGKILL cannot be trapped, so
# set --time in ALPHANAS_SLURM_ARGS as well.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: eval_slurm.sh PROGRAM [ARGS...]" >&2
    exit 2
fi
: "${ALPHANAS_ARCH_FILE:?ALPHANAS_ARCH_FILE is not set; run this script through alphanas --evaluator command}"
trial="${ALPHANAS_TRIAL_ID:-0}"
mode="${ALPHANAS_SLURM_MODE:-srun}"
shared="${ALPHANAS_SHARED_DIR:-$PWD/.alphanas-slurm}"
read -r -a extra <<< "${ALPHANAS_SLURM_ARGS:-}"

mkdir -p "$shared"
arch_file="$shared/trial-$trial-$$.json"
cp "$ALPHANAS_ARCH_FILE" "$arch_file"
export ALPHANAS_ARCH_FILE="$arch_file"
export ALPHANAS_TRIAL_ID="$trial"

case "$mode" in
srun)
    # srun exports the environment by default and forwards stdin to task 0.
    status=0
    srun --job-name="alphanas-$trial" --ntasks=1 "${extra[@]}" "$@" < "$arch_file" || status=$?
    rm -f "$arch_file"
    exit "$status"
    ;;
sbatch)
    job_script="$shared/trial-$trial-$$.sh"
    out="$shared/trial-$trial-$$.out"
    err="$shared/trial-$trial-$$.err"
    {
        echo "#!/usr/bin/env bash"
        # printf %q quotes each word, so no argument is reinterpreted by the batch shell.
        printf 'exec'
        printf ' %q' "$@"
        printf ' < %q\n' "$arch_file"
    } > "$job_script"
    chmod +x "$job_script"

    id_file="$shared/trial-$trial-$$.id"
    cancel() {
        # --parsable prints the job id at submission, before --wait blocks.
        local job_id
        job_id="$(cut -d';' -f1 "$id_file" 2>/dev/null || true)"
        if [[ -n "$job_id" ]]; then scancel "$job_id" 2>/dev/null || true; fi
        exit 143
    }
    trap cancel TERM INT

    status=0
    # --wait makes sbatch return the job's exit status once the job ends. It runs in the
    # background so that the trap can fire while it waits.
    sbatch --wait --parsable --job-name="alphanas-$trial" --export=ALL \
        --output="$out" --error="$err" "${extra[@]}" "$job_script" > "$id_file" &
    wait $! || status=$?

    [[ -f "$err" ]] && cat "$err" >&2
    [[ -f "$out" ]] && cat "$out"
    rm -f "$job_script" "$out" "$err" "$arch_file" "$id_file"
    exit "$status"
    ;;
*)
    echo "eval_slurm.sh: unknown ALPHANAS_SLURM_MODE '$mode'; use srun or sbatch" >&2
    exit 2
    ;;
esac
