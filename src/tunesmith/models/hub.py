"""Models named by Hugging Face Hub id (``meta-llama/Llama-3.2-1B``), and a model's display name.

Torch-free (config validation and the example-config test use it). A name is a hub id only when
it has the Hub's ``owner/name`` shape and no such local path exists, so a folder ``org/model``
in the working directory always wins. A hub id is fetched with ``huggingface_hub`` into its
usual cache (``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_TOKEN`` for gated models) and then loads as
an ordinary local folder: only safetensors weights, configs and tokenizer files are fetched.
Offline (``HF_HUB_OFFLINE=1``, or the Hub unreachable) an id already in that cache still
loads; otherwise the error says how to point ``model`` at a folder or a ``.gguf`` file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ModelError

# The Hub's repo id rules: owner and name of letters, digits, "-", "_", "."; neither starts or
# ends with "-" / "."; no "--" or ".." anywhere; at most 96 characters.
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"^{_PART}/{_PART}$")

# What a causal LM needs from a repo: configs, safetensors weights, tokenizer files. Never
# pickled weights; never the duplicate original checkpoints some repos ship beside them.
ALLOW = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt", "*.tiktoken"]
IGNORE = ["original/*", "consolidated*", "*.pth", "*.bin", "*.pt", "*.gguf"]


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is to be read as a Hub id: the ``owner/name`` shape, and not a local path."""
    name = str(name)
    if not _HUB_ID.match(name) or "--" in name or ".." in name or name.endswith(".gguf"):
        return False
    return not Path(name).exists()


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE) or env in ("1", "true", "yes", "on")


def _how_to_point_elsewhere(repo_id: str) -> str:
    local = "models/" + repo_id.split("/")[-1].lower()
    return (
        f"download it where the network allows (hf download {repo_id} --local-dir {local}) and set "
        f"model: {local}, or set model to a local Hugging Face folder or a .gguf file"
    )


def hub_snapshot(repo_id: str) -> Path:
    """The local folder of Hub model ``repo_id``: its cached snapshot, fetched first when the
    network allows. ModelError (one line) when it can be neither fetched nor found in the cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = _offline()
    try:
        folder = snapshot_download(
            repo_id, allow_patterns=ALLOW, ignore_patterns=IGNORE, local_files_only=offline
        )
    except GatedRepoError:
        raise ModelError(
            f"model {repo_id} is a gated Hub repository: accept its licence on huggingface.co and "
            "set HF_TOKEN (or run `hf auth login`), or " + _how_to_point_elsewhere(repo_id)
        ) from None
    except RepositoryNotFoundError:
        raise ModelError(
            f"model {repo_id}: no such local path, and no such Hugging Face Hub repository (or it "
            "is private: set HF_TOKEN)"
        ) from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub is unreachable"
        raise ModelError(
            f"model {repo_id}: no such local path, and as a Hugging Face Hub id it cannot be "
            f"fetched ({why}; not in the local Hub cache): {_how_to_point_elsewhere(repo_id)}"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"model {repo_id}: could not fetch it from the Hugging Face Hub: {exc}") from None
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise ModelError(f"model {repo_id}: the Hub repository has no config.json (not a transformers model)")
    if not any(path.glob("*.safetensors")):
        raise ModelError(
            f"model {repo_id}: the Hub repository has no safetensors weights (tunesmith loads "
            "safetensors only)"
        )
    return path


def _hub_id_of_cache_folder(path: Path) -> str | None:
    """``org/name`` for a folder inside the Hub cache (``…/models--org--name/snapshots/SHA``)."""
    for part in path.parts:
        if part.startswith("models--"):
            owner_name = part[len("models--") :].split("--")
            if len(owner_name) == 2:
                return "/".join(owner_name)
    return None


def model_name(path: str) -> str:
    """What to call the model ``path`` names in a model card or report: a hub id as given; a
    folder inside the Hub cache as its hub id; a GGUF file by its file name; any other local
    folder by its folder name (never a full local path, which means nothing elsewhere)."""
    text = str(path)
    if is_hub_id(text):
        return text
    p = Path(text)
    return _hub_id_of_cache_folder(p.resolve() if p.exists() else p) or p.name or text


__all__ = ["is_hub_id", "hub_snapshot", "model_name", "ALLOW", "IGNORE"]
