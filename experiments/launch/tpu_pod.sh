#!/bin/bash
# mmjax on a Cloud TPU pod slice: every worker (host) runs the same command.
#
#   experiments/launch/tpu_pod.sh TPU_NAME ZONE experiments/configs/seed_text_image.py gs://BUCKET/runs/seed
#
# Each worker must have the repository at ~/mmjax and mmjax installed with a TPU build of JAX
# (`pip install -e ~/mmjax "jax[tpu]"`). `--distributed` calls jax.distributed.initialize(),
# which finds the pod's layout by itself. The workdir must be shared by all workers (a gs://
# bucket): they save orbax checkpoints together and worker 0 writes metrics and results.json.
set -euo pipefail
TPU_NAME=${1:?usage: tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.FIELD=VALUE ...]}
ZONE=${2:?usage: tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.FIELD=VALUE ...]}
CONFIG=${3:?usage: tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.FIELD=VALUE ...]}
WORKDIR=${4:?usage: tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.FIELD=VALUE ...]}
shift 4
# Quoted for the remote shell, so overrides with spaces or quotes (tuples) arrive intact.
ARGS=$(printf '%q ' --config "$CONFIG" --workdir "$WORKDIR" "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command \
  "cd ~/mmjax && mmjax train --distributed $ARGS"
