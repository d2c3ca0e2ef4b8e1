"""The Tinker-compatible API with the official ``tinker`` SDK (0.38), against a real server."""

from __future__ import annotations

import pytest
from tinker_harness import tinker_fixtures

svc, tinker_client = tinker_fixtures("tinker_api")


def test_smoke_train_and_save(tinker_client):
    from tinker import types

    sc = tinker_client()
    caps = sc.get_server_capabilities()
    assert [m.model_name for m in caps.supported_models] == ["tiny"]
    tc = sc.create_lora_training_client(base_model="tiny", rank=4, seed=0).result()
    datum = types.Datum(
        model_input=types.ModelInput.from_ints([5, 6, 7, 8]),
        loss_fn_inputs={"target_tokens": [6, 7, 8, 9], "weights": [0.0, 1.0, 1.0, 1.0]},
    )
    losses = []
    for _ in range(3):
        fb = tc.forward_backward([datum], "cross_entropy")
        tc.optim_step(types.AdamParams(learning_rate=1e-2)).result()
        losses.append(fb.result().metrics["loss:sum"])
    assert losses[-1] < losses[0]
    saved = tc.save_state("s1").result()
    assert saved.path == f"tinker://{tc.model_id}/weights/s1"
