"""Serving corner cases of the jobs server, with the job's output written as a worker writes it
(no training here): a fully fine-tuned model (``--adapter none``) gets an inference server of its
own and answers streamed and concurrent requests next to the base; deleting it stops it."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from jobs_harness import chat_rows, jsonl_bytes, service_fixtures

pytest.importorskip("fastapi")


svc, _ = service_fixtures("serving")


def test_a_fully_fine_tuned_model_is_served_on_its_own(svc, tiny_model_dir):
    client = svc.client()
    train = client.files.create(
        file=("t.jsonl", jsonl_bytes(chat_rows(10)), "application/jsonl"), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(model="tiny", training_file=train.id, suffix="full")
    row = svc.store.get_job(None, job.id)
    model = f"ft:tiny:personal:full:{row['model_key']}"
    shutil.copytree(tiny_model_dir, svc.settings.run_dir(job.id) / "final")  # a whole model, no adapter
    svc.store.update_job(job.id, status="succeeded", fine_tuned_model=model, finished_at=row["created_at"])

    def ask(name):
        return "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model=name,
                max_tokens=5,
                temperature=0,
                stream=True,
                messages=[{"role": "user", "content": "what color is the sky?"}],
            )
            if c.choices
        )

    with ThreadPoolExecutor(4) as pool:  # concurrent streams for two servers
        texts = list(pool.map(ask, [model, "tiny", model, "tiny"]))
    # The copied weights are the base's: both servers answer greedily with the same text.
    assert texts[0] == texts[1] == texts[2] == texts[3]
    whole = svc.inference._bases[model].server
    assert whole.base_id == model and whole.peft_adapters() == []
    assert client.models.delete(model).deleted
    assert model not in svc.inference._bases
    with pytest.raises(openai.NotFoundError):
        ask(model)
