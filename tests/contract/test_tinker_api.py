"""The Tinker-compatible API with the official ``tinker`` SDK (0.38), against a real server.

Every route the SDK uses, through the SDK's own clients (``ServiceClient``, ``TrainingClient``,
``SamplingClient``, ``RestClient``) — protobuf ``forward_backward`` (zstd, as the server's
client config asks) and the JSON form, the five losses, sampling with log-probs, weights and
checkpoints — plus the error cases: unknown ids, another project's ids (404 exactly like a
missing one), a datum longer than the context, shapes that disagree, a bad key.
"""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest
import torch
from tinker_harness import tinker_fixtures, tinker_url

tinker = pytest.importorskip("tinker")
from tinker import types  # noqa: E402

svc, tinker_client = tinker_fixtures("tinker_api")


def _datum(tokens, targets, weights=None, **inputs):
    loss_inputs = {"target_tokens": list(targets), **inputs}
    if weights is not None:
        loss_inputs["weights"] = list(weights)
    return types.Datum(model_input=types.ModelInput.from_ints(list(tokens)), loss_fn_inputs=loss_inputs)


DATA = [
    _datum([5, 6, 7, 8], [6, 7, 8, 9], [0.0, 1.0, 1.0, 1.0]),
    _datum([10, 11, 12], [11, 12, 13], [1.0, 1.0, 1.0]),
]


@pytest.fixture(scope="module")
def sc(tinker_client):
    return tinker_client()


@pytest.fixture(scope="module")
def tc(sc):
    return sc.create_lora_training_client(base_model="tiny", rank=4, seed=0).result()


def _logprobs(result) -> list[np.ndarray]:
    return [np.asarray(o["logprobs"].tolist(), dtype=np.float64) for o in result.loss_fn_outputs]


def test_service_routes(sc, svc):
    assert [m.model_name for m in sc.get_server_capabilities().supported_models] == ["tiny"]
    r = httpx.get(tinker_url(svc) + "/api/v1/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    # The SDK made a session and heartbeats it; a heartbeat for a foreign session is a 404.
    key = "tml-" + svc.key_a
    r = httpx.post(
        tinker_url(svc) + "/api/v1/session_heartbeat",
        json={"session_id": "session-nope"},
        headers={"X-API-Key": key},
    )
    assert r.status_code == 404


def test_bad_key_is_refused(svc):
    r = httpx.get(tinker_url(svc) + "/api/v1/get_server_capabilities", headers={"X-API-Key": "tml-wrong"})
    assert r.status_code == 401
    with pytest.raises(tinker.AuthenticationError):
        tinker.ServiceClient(base_url=tinker_url(svc), api_key="tml-wrong").get_server_capabilities()


def test_forward_returns_logprobs_and_loss_of_the_sum(tc):
    out = tc.forward(DATA, "cross_entropy").result()
    lps = _logprobs(out)
    assert [lp.shape for lp in lps] == [(4,), (3,)]
    assert all((lp < 0).all() for lp in lps)
    expected = -sum(
        float((lp * np.asarray(d.loss_fn_inputs["weights"].tolist())).sum()) for lp, d in zip(lps, DATA)
    )
    assert out.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5)
    # A datum's log-probs do not depend on what else is in the batch (varlen packing).
    alone = _logprobs(tc.forward(DATA[1:], "cross_entropy").result())[0]
    np.testing.assert_allclose(alone, lps[1], atol=1e-5)


@pytest.mark.parametrize("loss_fn", ["importance_sampling", "ppo", "cispo", "dro"])
def test_rl_losses_match_the_pure_functions(tc, loss_fn):
    from tunesmith.losses.tinker import tinker_loss

    lp = _logprobs(tc.forward(DATA[:1], "cross_entropy").result())[0]
    q = (lp + np.array([0.3, -0.2, 0.1, 0.0])).tolist()
    adv = [0.0, 1.0, -1.0, 0.5]
    datum = _datum([5, 6, 7, 8], [6, 7, 8, 9], logprobs=q, advantages=adv)
    out = tc.forward([datum], loss_fn).result()
    expected, metrics = tinker_loss(
        loss_fn,
        torch.tensor(lp, dtype=torch.float32),
        {"logprobs": torch.tensor(q, dtype=torch.float32), "advantages": torch.tensor(adv)},
    )
    assert out.metrics["loss:sum"] == pytest.approx(float(expected), rel=1e-4, abs=1e-5)
    assert set(out.metrics) == set(metrics)


def test_gradients_accumulate_until_optim_step(sc):
    """Two forward_backward calls then one step == one call with both datums then one step."""
    adam = types.AdamParams(learning_rate=5e-2)
    a = sc.create_lora_training_client(base_model="tiny", rank=4, seed=7).result()
    b = sc.create_lora_training_client(base_model="tiny", rank=4, seed=7).result()
    a.forward_backward(DATA[:1], "cross_entropy").result()
    a.forward_backward(DATA[1:], "cross_entropy").result()
    a.optim_step(adam).result()
    b.forward_backward(DATA, "cross_entropy").result()
    b.optim_step(adam).result()
    after_a = _logprobs(a.forward(DATA, "cross_entropy").result())
    after_b = _logprobs(b.forward(DATA, "cross_entropy").result())
    for x, y in zip(after_a, after_b):
        np.testing.assert_allclose(x, y, atol=1e-5)
    # ... and the step changed the model (equal seeds started equal, both moved).
    fresh = sc.create_lora_training_client(base_model="tiny", rank=4, seed=7).result()
    before = _logprobs(fresh.forward(DATA, "cross_entropy").result())
    assert np.abs(before[0] - after_a[0]).max() > 1e-3


def test_training_lowers_the_loss(sc):
    tc = sc.create_lora_training_client(base_model="tiny", rank=8, seed=1).result()
    losses = []
    for _ in range(4):
        fb = tc.forward_backward(DATA, "cross_entropy")
        tc.optim_step(types.AdamParams(learning_rate=2e-2)).result()
        losses.append(fb.result().metrics["loss:sum"])
    assert losses[-1] < losses[0] - 0.5


def test_forward_backward_custom_equals_the_weighted_cross_entropy(sc):
    """The SDK's client-side loss (``forward_backward_custom``): −mean(lp) gives the gradient of
    cross_entropy with weights 1/N, so one step of each from equal models lands equal."""
    n = sum(d.model_input.length for d in DATA)

    def neg_mean_logprob(data, logprobs_list):
        loss = -sum(lp.sum() for lp in logprobs_list) / n
        return loss, {"custom_loss": float(loss)}

    adam = types.AdamParams(learning_rate=2e-2)
    custom = sc.create_lora_training_client(base_model="tiny", rank=4, seed=3).result()
    weighted = sc.create_lora_training_client(base_model="tiny", rank=4, seed=3).result()
    out = custom.forward_backward_custom(DATA, neg_mean_logprob).result()
    custom.optim_step(adam).result()
    data = [
        _datum(
            d.model_input.to_ints(),
            d.loss_fn_inputs["target_tokens"].tolist(),
            [1.0 / n] * d.model_input.length,
        )
        for d in DATA
    ]
    ref = weighted.forward_backward(data, "cross_entropy").result()
    weighted.optim_step(adam).result()
    assert out.metrics["custom_loss"] == pytest.approx(ref.metrics["loss:sum"], rel=1e-5)
    for x, y in zip(
        _logprobs(custom.forward(DATA, "cross_entropy").result()),
        _logprobs(weighted.forward(DATA, "cross_entropy").result()),
    ):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_json_forward_backward_body(svc, tc):
    """The JSON form (older SDKs) decodes like the protobuf the SDK sends now."""
    body = {
        "model_id": tc.model_id,
        "seq_id": 0,
        "forward_only": True,
        "forward_backward_input": {
            "loss_fn": "cross_entropy",
            "data": [
                {
                    "model_input": {"chunks": [{"type": "encoded_text", "tokens": [5, 6, 7, 8]}]},
                    "loss_fn_inputs": {
                        "target_tokens": {"data": [6, 7, 8, 9], "dtype": "int64", "shape": [4]},
                        "weights": {"data": [0.0, 1.0, 1.0, 1.0], "dtype": "float32", "shape": [4]},
                    },
                }
            ],
        },
    }
    r = httpx.post(
        tinker_url(svc) + "/api/v1/forward_backward", json=body, headers={"X-API-Key": "tml-" + svc.key_a}
    )
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    from tinker.proto.response_conv import deserialize_proto_response

    got = httpx.post(
        tinker_url(svc) + "/api/v1/retrieve_future",
        json={"request_id": rid},
        headers={"X-API-Key": "tml-" + svc.key_a, "Accept": "application/x-protobuf"},
        timeout=60,
    )
    assert got.headers["content-type"].startswith("application/x-protobuf")
    out = deserialize_proto_response(got.content, types.ForwardBackwardOutput)
    sdk = _logprobs(tc.forward(DATA[:1], "cross_entropy").result())[0]
    np.testing.assert_allclose(np.asarray(out.loss_fn_outputs[0]["logprobs"].tolist()), sdk, atol=1e-6)


def test_bad_requests_fail_with_a_user_error(tc):
    too_long = _datum(range(1, 600), range(2, 601), [1.0] * 599)  # the tiny model's context is 512
    with pytest.raises(tinker.RequestFailedError, match="longer than the model's context") as info:
        tc.forward_backward([too_long], "cross_entropy").result()
    assert info.value.category == types.RequestErrorCategory.User
    wrong_shape = _datum([5, 6, 7], [6, 7, 8], [1.0, 1.0])
    with pytest.raises((tinker.RequestFailedError, tinker.BadRequestError), match="weights"):
        tc.forward_backward([wrong_shape], "cross_entropy").result()
    outside = _datum([5, 6, 7], [6, 7, 100000], [1.0, 1.0, 1.0])
    with pytest.raises(tinker.RequestFailedError, match="vocabulary|target_tokens"):
        tc.forward_backward([outside], "cross_entropy").result()
    with pytest.raises(tinker.RequestFailedError, match="advantages"):
        tc.forward_backward(DATA[:1], "importance_sampling").result()
    rl = _datum([5, 6, 7], [6, 7, 8], logprobs=[-1.0, -1.0, -1.0], advantages=[1.0, 1.0, 1.0])
    with pytest.raises(tinker.RequestFailedError, match="does not take"):
        tc.forward_backward([rl], "ppo", loss_fn_config={"beta": 1.0}).result()
    # The model still trains after the refusals (nothing half-applied).
    tc.forward_backward(DATA, "cross_entropy").result()
    tc.optim_step(types.AdamParams(learning_rate=1e-3)).result()


def _raw(svc, path: str, body: dict, key: str | None = None):
    return httpx.post(
        tinker_url(svc) + "/api/v1/" + path,
        json=body,
        headers={"X-API-Key": "tml-" + (key or svc.key_a)},
        timeout=60,
    )


def test_unknown_and_foreign_ids_answer_the_same_404(svc, tc, tinker_client):
    other = tinker_client("beta")
    assert other.get_server_capabilities().supported_models
    foreign = _raw(svc, "get_info", {"model_id": tc.model_id}, key=svc.key_b)
    missing = _raw(svc, "get_info", {"model_id": "model-" + "0" * 24}, key=svc.key_b)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"]["message"].replace(tc.model_id, "X") == missing.json()["error"][
        "message"
    ].replace("model-" + "0" * 24, "X")
    body = {"model_id": tc.model_id, "optim_params": {"learning_rate": 1e-3}}
    assert _raw(svc, "optim_step", body, key=svc.key_b).status_code == 404
    # Another project's checkpoint path is as missing as an unknown one.
    path = tc.save_state("shared-name").result().path
    with pytest.raises(tinker.NotFoundError):
        other.create_training_client_from_state(path).result()
    with pytest.raises(tinker.NotFoundError):
        other.create_sampling_client(model_path=path).result()
    with pytest.raises(tinker.NotFoundError):
        other.create_training_client_from_state(path.replace(tc.model_id, "model-" + "1" * 24)).result()
    # A future id of another project.
    rid = _raw(svc, "optim_step", {"model_id": tc.model_id, "optim_params": {"learning_rate": 0.0}}).json()[
        "request_id"
    ]
    assert _raw(svc, "retrieve_future", {"request_id": rid}, key=svc.key_b).status_code == 404
    assert _raw(svc, "retrieve_future", {"request_id": rid}).status_code == 200


def test_sampling_returns_tokens_logprobs_and_stop_reasons(sc, tc):
    sampler = tc.save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints([5, 6, 7])
    params = types.SamplingParams(max_tokens=6, temperature=1.0, seed=3, stop=[])
    res = sampler.sample(prompt=prompt, num_samples=3, sampling_params=params).result()
    assert len(res.sequences) == 3
    for seq in res.sequences:
        assert len(seq.tokens) == 6 and seq.stop_reason == "length"
        assert len(seq.logprobs) == 6 and all(lp <= 0 for lp in seq.logprobs)
        assert seq.sequence_id
    # The sampled log-probs are the training model's own (temperature 1).
    seq = res.sequences[0]
    datum = _datum([5, 6, 7, *seq.tokens[:-1]], [6, 7, *seq.tokens], [1.0] * (2 + len(seq.tokens)))
    lp = _logprobs(tc.forward([datum], "cross_entropy").result())[0]
    np.testing.assert_allclose(lp[2:], seq.logprobs, atol=1e-4)
    # Same seed, same draws; greedy stops at a stop token it includes.
    again = sampler.sample(prompt=prompt, num_samples=3, sampling_params=params).result()
    assert [s.tokens for s in again.sequences] == [s.tokens for s in res.sequences]
    first = res.sequences[0].tokens[0]
    stop = types.SamplingParams(max_tokens=6, temperature=1.0, seed=3, stop=[first])
    stopped = sampler.sample(prompt=prompt, num_samples=1, sampling_params=stop).result().sequences[0]
    assert stopped.tokens == [first] and stopped.stop_reason == "stop"
    # Prompt log-probs (compute_logprobs): NaN-free after the first position, equal to forward.
    scored = sampler.compute_logprobs(types.ModelInput.from_ints([5, 6, 7, 8])).result()
    assert scored[0] is None
    fwd = _logprobs(tc.forward(DATA[:1], "cross_entropy").result())[0]
    np.testing.assert_allclose(scored[1:], fwd[:3], atol=1e-4)


def test_sampling_the_base_model_and_a_saved_sampler(sc):
    tc = sc.create_lora_training_client(base_model="tiny", rank=4, seed=2).result()
    for _ in range(3):
        tc.forward_backward(DATA, "cross_entropy").result()
        tc.optim_step(types.AdamParams(learning_rate=5e-2)).result()
    base = sc.create_sampling_client(base_model="tiny").result()
    greedy = types.SamplingParams(max_tokens=4, temperature=0.0, stop=[])
    prompt = types.ModelInput.from_ints([5, 6, 7])
    from_base = base.sample(prompt=prompt, num_samples=1, sampling_params=greedy).result().sequences[0]
    path = tc.save_weights_for_sampler("for-sampling").result().path
    assert path.endswith("/sampler_weights/for-sampling")
    saved = sc.create_sampling_client(model_path=path).result()
    from_saved = saved.sample(prompt=prompt, num_samples=1, sampling_params=greedy).result().sequences[0]
    live = tc.save_weights_and_get_sampling_client().result()
    from_live = live.sample(prompt=prompt, num_samples=1, sampling_params=greedy).result().sequences[0]
    np.testing.assert_allclose(from_saved.logprobs, from_live.logprobs, atol=1e-5)
    assert from_saved.tokens == from_live.tokens
    assert (
        not np.allclose(from_base.logprobs, from_live.logprobs, atol=1e-4)
        or from_base.tokens != from_live.tokens
    )
    with pytest.raises(tinker.BadRequestError):
        sc.create_sampling_client(base_model="not-served").result()


def test_save_load_with_optimizer_resumes_exactly(sc):
    adam = types.AdamParams(learning_rate=2e-2)
    tc = sc.create_lora_training_client(base_model="tiny", rank=4, seed=11).result()
    for _ in range(2):
        tc.forward_backward(DATA, "cross_entropy").result()
        tc.optim_step(adam).result()
    path = tc.save_state("mid").result().path
    tc.forward_backward(DATA, "cross_entropy").result()
    tc.optim_step(adam).result()
    uninterrupted = tc.forward(DATA, "cross_entropy").result().metrics["loss:sum"]

    resumed = sc.create_training_client_from_state_with_optimizer(path).result()
    assert resumed.model_id != tc.model_id
    resumed.forward_backward(DATA, "cross_entropy").result()
    resumed.optim_step(adam).result()
    assert resumed.forward(DATA, "cross_entropy").result().metrics["loss:sum"] == pytest.approx(
        uninterrupted, abs=1e-5
    )
    # Without the optimizer state the third step differs (Adam restarts).
    fresh = sc.create_training_client_from_state(path).result()
    fresh.forward_backward(DATA, "cross_entropy").result()
    fresh.optim_step(adam).result()
    assert abs(fresh.forward(DATA, "cross_entropy").result().metrics["loss:sum"] - uninterrupted) > 1e-4
    # load_state into an existing model restores the saved weights.
    tc.load_state(path).result()
    mid = sc.create_training_client_from_state(path).result()
    assert tc.forward(DATA, "cross_entropy").result().metrics["loss:sum"] == pytest.approx(
        mid.forward(DATA, "cross_entropy").result().metrics["loss:sum"], abs=1e-6
    )


def test_checkpoints_rest_routes_and_peft_folder(svc, sc, tc, tiny_model_dir):
    rc = tinker.RestClient(base_url=tinker_url(svc), api_key="tml-" + svc.key_a)
    tc.save_state("rest-a").result()
    sampler_path = tc.save_weights_for_sampler("rest-b").result().path
    listed = rc.list_checkpoints(tc.model_id).result().checkpoints
    ids = {c.checkpoint_id: c for c in listed}
    assert {"weights/rest-a", "sampler_weights/rest-b"} <= set(ids)
    assert ids["weights/rest-a"].checkpoint_type == "training" and ids["weights/rest-a"].size_bytes > 0
    run = rc.get_training_run(tc.model_id).result()
    assert run.base_model == "tiny" and run.is_lora and run.lora_rank == 4
    assert tc.model_id in [r.training_run_id for r in rc.list_training_runs().result().training_runs]
    info = rc.get_weights_info_by_tinker_path(sampler_path).result()
    assert info.base_model == "tiny" and info.lora_rank == 4
    # The checkpoint is an ordinary PEFT adapter folder.
    folder = svc.settings.data_dir / "tinker"
    found = list(folder.glob(f"*/{tc.model_id}/sampler_weights/rest-b"))
    assert len(found) == 1
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.models.adapters import check_adapter_dir

    check_adapter_dir(found[0])
    cfg = json.loads((found[0] / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["peft_type"] == "LORA"
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(found[0]))
    assert any("lora_A" in n for n, _ in peft.named_parameters())
    # The archive route returns the folder; delete removes it; TTL is stored.
    r = httpx.get(
        tinker_url(svc) + f"/api/v1/training_runs/{tc.model_id}/checkpoints/sampler_weights/rest-b/archive",
        headers={"X-API-Key": "tml-" + svc.key_a},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    rc.set_checkpoint_ttl_from_tinker_path(sampler_path, 3600).result()
    expires = [
        c
        for c in rc.list_checkpoints(tc.model_id).result().checkpoints
        if c.checkpoint_id == "sampler_weights/rest-b"
    ]
    assert expires[0].expires_at is not None
    rc.delete_checkpoint_from_tinker_path(sampler_path).result()
    assert "sampler_weights/rest-b" not in {
        c.checkpoint_id for c in rc.list_checkpoints(tc.model_id).result().checkpoints
    }
    with pytest.raises(tinker.NotFoundError):
        rc.delete_checkpoint_from_tinker_path(sampler_path).result()
    # Saving under an existing name needs overwrite; path-like names are refused.
    with pytest.raises(tinker.RequestFailedError, match="already exists"):
        tc.save_state("rest-a").result()
    with pytest.raises((tinker.RequestFailedError, tinker.BadRequestError), match="path"):
        tc.save_state("../escape").result()


def test_models_are_isolated_and_unload(svc, sc, tinker_client):
    """Two projects' LoRA models on one base: training one leaves the other untouched."""
    mine = sc.create_lora_training_client(base_model="tiny", rank=4, seed=5).result()
    theirs = tinker_client("beta").create_lora_training_client(base_model="tiny", rank=4, seed=5).result()
    before = _logprobs(theirs.forward(DATA, "cross_entropy").result())
    for _ in range(2):
        mine.forward_backward(DATA, "cross_entropy").result()
        mine.optim_step(types.AdamParams(learning_rate=5e-2)).result()
    after = _logprobs(theirs.forward(DATA, "cross_entropy").result())
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)
    r = _raw(svc, "unload_model", {"model_id": mine.model_id})
    assert r.status_code == 200
    rid = r.json()["request_id"]
    assert _raw(svc, "retrieve_future", {"request_id": rid}).json()["type"] == "unload_model"
    assert _raw(svc, "get_info", {"model_id": mine.model_id}).status_code == 404
    assert not math.isnan(theirs.forward(DATA, "cross_entropy").result().metrics["loss:sum"])


def test_a_sampler_checkpoint_serves_and_exports(svc, sc, tiny_model_dir, tmp_path):
    """A saved checkpoint is an ordinary PEFT adapter: the jobs server's OpenAI inference answers
    with it by its tinker:// path (for its own project only), and ``tunesmith export`` merges it
    (export checks merged == adapter logits itself)."""
    import openai

    from tunesmith.cli import main as cli_main

    tc = sc.create_lora_training_client(base_model="tiny", rank=4, seed=4).result()
    for _ in range(2):
        tc.forward_backward(DATA, "cross_entropy").result()
        tc.optim_step(types.AdamParams(learning_rate=5e-2)).result()
    path = tc.save_weights_for_sampler("to-serve").result().path
    client = openai.OpenAI(base_url=svc.base_url, api_key=svc.key_a)
    out = client.completions.create(model=path, prompt="red green", max_tokens=3, temperature=0)
    assert out.model == path and out.choices[0].text is not None
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=svc.base_url, api_key=svc.key_b).completions.create(
            model=path, prompt="red", max_tokens=1
        )
    folder = next((svc.settings.data_dir / "tinker").glob(f"*/{tc.model_id}/sampler_weights/to-serve"))
    merged = tmp_path / "merged"
    assert (
        cli_main(
            ["export", str(folder), "--model", str(tiny_model_dir), "--format", "hf", "--out", str(merged)]
        )
        == 0
    )
    assert (merged / "config.json").is_file()


def test_concurrent_sample_requests_share_a_batch_and_match_alone(svc, sc):
    """One-sample requests in flight together (an RL loop's episodes) decode as one batch; each
    answer equals the same request sampled alone (greedy, so comparable)."""
    host = svc.tinker
    sampler = sc.create_sampling_client(base_model="tiny").result()
    greedy = types.SamplingParams(max_tokens=5, temperature=0.0, stop=[])
    prompts = [[5, 6, 7], [9], [11, 12, 13, 14, 15], [20, 21]] * 3
    alone = [
        sampler.sample(types.ModelInput.from_ints(p), num_samples=1, sampling_params=greedy)
        .result()
        .sequences[0]
        for p in prompts[:4]
    ]
    before = sum(n * c for n, c in host.sample_batches.items() if n > 1)
    futures = [
        sampler.sample(types.ModelInput.from_ints(p), num_samples=1, sampling_params=greedy) for p in prompts
    ]
    together = [f.result().sequences[0] for f in futures]
    for i, seq in enumerate(together):
        ref = alone[i % 4]
        assert seq.tokens == ref.tokens
        np.testing.assert_allclose(seq.logprobs, ref.logprobs, atol=1e-5)
    assert sum(n * c for n, c in host.sample_batches.items() if n > 1) > before  # some shared a batch
