"""Keep transformers' and PEFT's progress bars and deprecation chatter out of tunesmith's output,
without importing them: a command that never loads a model (``tunesmith --help``, ``data
check``) should not pay for importing torch."""

from __future__ import annotations

import os
import sys
import warnings


def quiet_third_party() -> None:
    """Errors only from transformers, no Hugging Face progress bars. Before transformers is
    imported this sets the environment it reads at import (a user's own setting wins, and child
    processes inherit it); after, it calls transformers' logging API."""
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
