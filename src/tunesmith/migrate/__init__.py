"""Migrate fine-tuning work from OpenAI (or any server speaking its fine-tuning API) to tunesmith.

``tunesmith openai …`` (docs/migrate-from-openai.md), over the official ``openai`` SDK:

* :mod:`.pull` — list the account's jobs, download their files (resumable), write one run
  config per job and a manifest (:mod:`.manifest`) of what was mapped and what was not;
* :mod:`.mapping` — one job -> a tunesmith run config (the jobs worker's own mapping for
  supervised and DPO; reinforcement -> GRPO with the job's grader as the reward), or the reason
  it cannot be mapped;
* :mod:`.record` — the current model's answers to a held-out set (append-only, resumable),
  compared later by ``tunesmith eval --against`` (:mod:`tunesmith.eval.recorded`);
* :mod:`.push` — re-create the pulled jobs on a tunesmith server, idempotently;
* :mod:`.client` — the SDK client, retries and one-line API errors.
"""
