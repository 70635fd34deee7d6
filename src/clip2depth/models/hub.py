"""Trained-model directories on the Hugging Face Hub (the optional ``hub`` extra).

``hf-hub:org/name[@revision]`` downloads ``config.json`` + ``model.safetensors`` into the local Hub
cache; :func:`upload_model_dir` publishes a directory written by ``save_pretrained``, model card included.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

from clip2depth.errors import CheckpointError, ConfigError
from clip2depth.models.card import CARD_NAME
from clip2depth.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, is_model_dir

logger = logging.getLogger(__name__)

HF_PREFIX = "hf-hub:"


def require_huggingface_hub(what: str) -> ModuleType:
    """The ``huggingface_hub`` module, or one :class:`ConfigError` saying that ``what`` needs the ``hub`` extra."""
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ConfigError(f"{what} needs huggingface_hub: pip install 'clip2depth[hub]'") from exc
    return huggingface_hub


def download_model_dir(name: str) -> str:
    """Download ``hf-hub:org/name[@revision]`` (config + weights only) and return the local folder."""
    repo, _, revision = name[len(HF_PREFIX):].partition("@")
    hub = require_huggingface_hub(name)
    try:
        path = hub.snapshot_download(
            repo_id=repo, revision=revision or None, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]
        )
    except Exception as exc:  # the hub raises many types (offline, missing repo, auth)
        raise ConfigError(f"could not fetch {name} from the Hugging Face Hub: {exc}") from exc
    if not is_model_dir(path):
        raise ConfigError(f"{name} has no {CONFIG_NAME}: it is not a clip2depth model repository")
    return path


def upload_model_dir(
    directory: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload clip2depth model",
) -> str:
    """Create ``repo_id`` if needed and upload ``config.json``, ``model.safetensors`` and the model card
    ``README.md`` from ``directory`` (e.g. a training run's ``best/``).

    Returns:
        The URL of the commit on the Hub.
    """
    if not is_model_dir(directory) or not (Path(directory) / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{directory} is not a saved clip2depth model ({CONFIG_NAME} + {WEIGHTS_NAME})")
    hub = require_huggingface_hub("push_to_hub")
    api = hub.HfApi(token=token)
    try:
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(directory), allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
            commit_message=commit_message,
        )
    except Exception as exc:  # network, authentication and permission errors all end here
        raise ConfigError(f"could not upload {directory} to the Hugging Face Hub repository {repo_id}: {exc}") from exc
    logger.info("uploaded %s to %s", directory, repo_id)
    return str(getattr(commit, "commit_url", commit))
