#!/usr/bin/env bash
# Start TF Serving on a model exported by `python -m maskpre_tf.export` (see export/README.md).
#
#   export/serve.sh docker   # the official tensorflow/serving container (needs Docker)
#   export/serve.sh local    # a tensorflow_model_server binary on PATH, reading models.config
#
# Both listen on gRPC port 8500 and REST port 8501 and replay the export's warmup requests
# (assets.extra/tf_serving_warmup_requests) before serving. Environment overrides:
#   MODELS_DIR  folder holding <MODEL_NAME>/<version>/ and models.config (default export/models)
#   MODEL_NAME  served model name (default maskpre)
#   GRPC_PORT, REST_PORT  host ports (defaults 8500, 8501)
#   TFS_IMAGE   container image (default tensorflow/serving:latest; pin a release that is at
#               least as new as the TensorFlow used for the export)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODELS_DIR="$(cd "${MODELS_DIR:-$here/models}" && pwd)"
MODEL_NAME="${MODEL_NAME:-maskpre}"
GRPC_PORT="${GRPC_PORT:-8500}"
REST_PORT="${REST_PORT:-8501}"
TFS_IMAGE="${TFS_IMAGE:-tensorflow/serving:latest}"

if [[ ! -d "$MODELS_DIR/$MODEL_NAME" ]]; then
  echo "error: $MODELS_DIR/$MODEL_NAME does not exist; run python -m maskpre_tf.export" \
       "--run_dir=RUN_DIR --export_dir=$MODELS_DIR/$MODEL_NAME first" >&2
  exit 2
fi

case "${1:-docker}" in
  docker)
    # The image's entrypoint serves /models/$MODEL_NAME (the newest version) under MODEL_NAME.
    exec docker run --rm -p "$GRPC_PORT:8500" -p "$REST_PORT:8501" \
      --mount "type=bind,source=$MODELS_DIR/$MODEL_NAME,target=/models/$MODEL_NAME,readonly" \
      -e MODEL_NAME="$MODEL_NAME" "$TFS_IMAGE"
    ;;
  local)
    exec tensorflow_model_server --port="$GRPC_PORT" --rest_api_port="$REST_PORT" \
      --model_config_file="$MODELS_DIR/models.config" \
      --model_config_file_poll_wait_seconds=60 --enable_model_warmup=true
    ;;
  *)
    echo "usage: $0 [docker|local]" >&2
    exit 2
    ;;
esac
