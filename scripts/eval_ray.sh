#!/usr/bin/env bash
# Runs an AlphaNAS evaluator command as a Ray job (`ray job submit --wait`) and relays its
# result.
#
# Usage, as the command evaluator:
#   alphanas search --evaluator command --eval-cmd "scripts/eval_ray.sh python3 train.py"
#
# A Ray job has no stdin, so the architecture JSON is copied into the uploaded working
# directory, and the entrypoint reads it from there (stdin and ALPHANAS_ARCH_FILE, as with a
# local command). The entrypoint is one shell string on the Ray side; every argument is
# quoted with printf %q, so no value is reinterpreted there.
#
# `ray job submit` mixes its own status lines into stdout after the job's output, so this
# script prints the last stdout line that starts with `{` last, and sends the other lines to
# stderr, where AlphaNAS keeps the end of them for failed trials.
#
# Settings (environment variables):
#   ALPHANAS_RAY_ARGS         extra options for `ray job submit`, split on whitespace
#                             (for example "--address=http://head:8265").
#   ALPHANAS_RAY_WORKING_DIR  folder uploaded as the job's working directory (default: .).
#
# NOTE: tested only against a stand-in `ray` script, not a real Ray cluster. A failed trial
# is detected from the exit status of `ray job submit --wait`, assumed non-zero when the job
# fails.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: eval_ray.sh PROGRAM [ARGS...]" >&2
    exit 2
fi
: "${ALPHANAS_ARCH_FILE:?ALPHANAS_ARCH_FILE is not set; run this script through alphanas --evaluator command}"
trial="${ALPHANAS_TRIAL_ID:-0}"
workdir="${ALPHANAS_RAY_WORKING_DIR:-.}"
read -r -a extra <<< "${ALPHANAS_RAY_ARGS:-}"

arch_name="alphanas-trial-$trial-$$.json"
cp "$ALPHANAS_ARCH_FILE" "$workdir/$arch_name"
output="$(mktemp)"
trap 'rm -f "$workdir/$arch_name" "$output"' EXIT

entrypoint="ALPHANAS_ARCH_FILE=$arch_name ALPHANAS_TRIAL_ID=$trial exec$(printf ' %q' "$@") < $arch_name"

status=0
ray job submit --wait --working-dir "$workdir" "${extra[@]}" -- "$entrypoint" > "$output" || status=$?

metrics_line="$(grep -E '^[[:space:]]*\{' "$output" | tail -n 1 || true)"
grep -vxF -- "$metrics_line" "$output" >&2 || true
if [[ -n "$metrics_line" ]]; then
    echo "$metrics_line"
fi
exit "$status"
