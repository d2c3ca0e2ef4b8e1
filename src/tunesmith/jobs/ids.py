"""Identifiers: OpenAI-shaped object ids, fine-tuned model ids and API keys.

Ids are random base62 strings from :mod:`secrets` with OpenAI's prefixes (``file-`` + 22,
``ftjob-`` + 24, ``ftevent-``, ``ftckpt_``, ``cp_``, ``proj_``). Fine-tuned model ids follow
``ft:{base}:{owner}:{suffix}:{8-char key}`` (suffix may be empty) and checkpoint models add
``:ckpt-step-{N}`` — see ../shared spec §1.4. API keys are ``sk-ts-`` + 40 base62 characters,
stored only as their SHA-256 (a key has 238 bits of entropy, so a plain hash cannot be reversed
by guessing) and compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import unicodedata
from dataclasses import dataclass
from functools import partial

ALPHABET = string.ascii_letters + string.digits
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CKPT = re.compile(r"^ckpt-step-(\d+)$")
KEY_PREFIX = "sk-ts-"


def random_id(prefix: str, n: int) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(n))


# Each maker returns a fresh id: prefix + random base62 characters (module doc).
file_id = partial(random_id, "file-", 22)
job_id = partial(random_id, "ftjob-", 24)
event_id = partial(random_id, "ftevent-", 24)
checkpoint_id = partial(random_id, "ftckpt_", 24)
permission_id = partial(random_id, "cp_", 24)
project_id = partial(random_id, "proj_", 24)
model_key = partial(random_id, "", 8)  # the 8 characters that end an ft: model id
new_api_key = partial(random_id, KEY_PREFIX, 40)


def hash_key(key: str) -> str:
    """Hex SHA-256 of an API key (what the store keeps)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def keys_match(presented_hash: str, stored_hash: str) -> bool:
    """Constant-time comparison of two key hashes (no early exit on the first differing byte)."""
    return hmac.compare_digest(presented_hash.encode("ascii"), stored_hash.encode("ascii"))


def is_safe_name(name: str) -> bool:
    """A base-model or project name that can appear inside a model id: no ':' or '/'."""
    return bool(_SAFE_NAME.match(name)) and ".." not in name


def is_valid_suffix(suffix: str) -> bool:
    """``suffix`` of a job: 1-64 of [A-Za-z0-9_-] (it becomes part of a model id)."""
    return bool(_SUFFIX.match(suffix))


def clean_filename(name: str, limit: int = 255) -> str:
    """The client's file name as metadata only: NFC, control characters and path separators
    removed, at most ``limit`` characters. It is never used to build a path."""
    name = unicodedata.normalize("NFC", name or "")
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.replace("/", "_").replace("\\", "_")
    return name[:limit] or "upload"


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``ft:`` model id."""

    base: str
    owner: str
    suffix: str
    key: str
    step: int | None = None

    @property
    def model_id(self) -> str:
        return f"ft:{self.base}:{self.owner}:{self.suffix}:{self.key}"


def ft_model_id(base: str, owner: str, suffix: str | None, key: str, step: int | None = None) -> str:
    out = f"ft:{base}:{owner}:{suffix or ''}:{key}"
    return out if step is None else f"{out}:ckpt-step-{step}"


def parse_ft_model(model: str) -> ModelRef | None:
    """Split an ``ft:`` id into its fields (5, or 6 for a checkpoint); None when malformed."""
    parts = model.split(":")
    if len(parts) not in (5, 6) or parts[0] != "ft":
        return None
    _, base, owner, suffix, key = parts[:5]
    if not (
        is_safe_name(base)
        and is_safe_name(owner)
        and (suffix == "" or is_valid_suffix(suffix))
        and len(key) == 8
        and key.isalnum()
    ):
        return None
    step = None
    if len(parts) == 6:
        m = _CKPT.match(parts[5])
        if not m:
            return None
        step = int(m.group(1))
    return ModelRef(base, owner, suffix, key, step)
