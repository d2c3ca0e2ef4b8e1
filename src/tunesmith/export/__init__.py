"""Export: merged weights verified against the adapter (GGUF and Ollama to follow)."""
