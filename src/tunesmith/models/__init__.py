"""Load causal LMs and tokenizers, attach adapters, and run the padding-free forward."""
