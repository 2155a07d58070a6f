#!/usr/bin/env bash
# RecBole's SASRec and GRU4Rec beside the project's sequence models: on every implicit leave_last_out
# prepare run of an experiment with one tie rule (by default the three seeds of docs/sequence.md's random-ties
# table), both models fitted side by side (six fits for three seeds: meant for a GPU machine, where each
# takes a minute or two; on a 2-core CPU an epoch takes minutes), each by bench/peers.py in RecBole's own
# virtualenv and scored by the project's evaluator; then the report and the page regenerated.
#
#   python -m venv .venv-recbole && .venv-recbole/bin/pip install torch==2.13.0 recbole==1.2.1 "numpy<2"
#   python bench/leaderboard.py --experiment sequence ...     # the command in docs/sequence.md's header
#   RECBOLE_PYTHON=.venv-recbole/bin/python bash bench/recbole_rows.sh [experiment] [tie_break] [--dry-run]
#
# Against $MLFLOW_TRACKING_URI (default ./mlflow.db, as bench/leaderboard.py). Logs: recbole-<model>-<run>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
exp=${1:-sequence}
tie=${2:-random}
dry=${3:-}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlflow.db}
: "${RECBOLE_PYTHON:?set RECBOLE_PYTHON to RecBole 1.2.1's interpreter (see this file's header)}"
runs=$(python - "$exp" "$tie" <<'PY'
import sys

import mlflow

exp = mlflow.get_experiment_by_name(sys.argv[1])
if exp is None:
    sys.exit(f"experiment {sys.argv[1]!r} does not exist: run bench/leaderboard.py into it first")
found = mlflow.search_runs([exp.experiment_id], "tags.step = 'prepare' and attributes.status = 'FINISHED' and "
                           f"tags.task = 'implicit' and tags.split = 'leave_last_out' and tags.tie_break = '{sys.argv[2]}'",
                           output_format="list")
if not found:
    sys.exit(f"experiment {sys.argv[1]!r} has no finished implicit leave_last_out prepare run with tie_break={sys.argv[2]}")
print(" ".join(r.info.run_id for r in found))
PY
)
pids=()
for run in $runs; do
  for model in SASRec GRU4Rec; do
    cmd=(python bench/peers.py --data "runs:/$run/data" --experiment "$exp" --only "recbole:$model"
         --recbole-python "$RECBOLE_PYTHON")
    echo "\$ ${cmd[*]}"
    [ "$dry" = "--dry-run" ] && continue
    "${cmd[@]}" >"recbole-$model-$run.log" 2>&1 &
    pids+=($!)
  done
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ "$dry" = "--dry-run" ] && exit 0
[ $status = 0 ] || { echo "a fit failed: see recbole-*.log" >&2; exit 1; }
python -m mlflow run . -e report -P "experiment=$exp" --env-manager local
echo "now regenerate the page: python bench/leaderboard.py --write-only --experiment $exp --page docs/sequence.md \\"
echo "  --title 'Sequence models on real ML-100K' --no-readme"
