"""Export: merged weights verified against the adapter, GGUF (checked in llama.cpp) with an Ollama
Modelfile, or the adapter alone (docs/export.md); a training checkpoint written as a PEFT adapter
folder (:mod:`.adapter`, which the jobs service serves and continues from)."""
