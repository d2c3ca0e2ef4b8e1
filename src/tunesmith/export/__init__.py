"""Export: merged weights verified against the adapter, GGUF (checked in llama.cpp) with an Ollama
Modelfile, or the adapter alone (docs/export.md)."""
