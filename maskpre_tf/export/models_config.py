"""The TF Serving ``--model_config_file`` (``models.config``) listing the exported models.

One file sits next to the model base paths (``<export_dir>/../models.config``) and lists every
model exported under that parent folder; exporting a model adds or replaces its own entry.
"""

from __future__ import annotations

import os

from maskpre_tf.errors import UserError

MODELS_CONFIG = "models.config"


def models_config_path(export_dir: str) -> str:
    """The models.config of the model base path ``export_dir``: in its parent folder."""
    return os.path.join(os.path.dirname(os.path.abspath(export_dir)), MODELS_CONFIG)


def write_models_config(config_path: str, model_name: str, base_path: str) -> str:
    """Add or replace ``model_name`` in a TF Serving ``--model_config_file`` (text proto).

    Other models already listed are kept. Written atomically (temp file + rename).

    Args:
      config_path: the models.config file.
      model_name: the model's name (the ``/v1/models/<name>`` of the REST API).
      base_path: the directory holding the numbered versions, as the server sees it.

    Returns:
      the text written.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    if os.path.exists(config_path):
        try:
            with open(config_path) as f:
                text_format.Parse(f.read(), config)
        except (OSError, text_format.ParseError) as err:
            raise UserError(
                f"{config_path}: exists but is not a TF Serving model config ({err}); fix or "
                "delete it and export again"
            ) from err
    models = config.model_config_list.config
    kept = [m for m in models if m.name != model_name]
    del models[:]
    models.extend(kept)
    models.add(name=model_name, base_path=base_path, model_platform="tensorflow")
    text = text_format.MessageToString(config)
    tmp = f"{config_path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, config_path)
    return text
