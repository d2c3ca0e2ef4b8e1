"""The Tinker API's supervised loop is ``tunesmith train`` (CPU, fp32): same per-step losses,
same final adapter.

Loop (a) is the real ``tunesmith train CONFIG`` command (in-process). Loop (b) is the official
``tinker`` SDK against a real ``tunesmith server``: per optimizer step, one ``forward_backward``
call (loss ``cross_entropy``) per forward pass of the engine's window, then one
``optim_step``. Both start from the same adapter (the API model's ``save_state``, downloaded
through the checkpoint archive route and given to tunesmith as ``adapter.init_from``), train
on the same batches in the same order (the engine's own windows, :meth:`Trainer.window`) with
the same AdamW settings (constant lr, no warm-up, decoupled weight decay, global-norm clip).

How the losses are made equal: ``tunesmith train`` sums token cross-entropy over the
supervised positions of every micro-batch of a step's accumulation window and divides by
``N``, the number of supervised tokens in the whole window (engine/loop.py, DESIGN principle
3); Tinker's ``cross_entropy`` is ``-Σ weights · log p`` summed over tokens, and gradients add
across ``forward_backward`` calls until ``optim_step``. So a datum per example, with
``model_input = ids[:-1]``, ``target_tokens = ids[1:]`` and ``weights = mask[1:] / N``, gives
the same loss (the sum of the calls' ``loss:sum``) and the same gradient.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
from tinker_harness import tinker_fixtures, tinker_url  # noqa: E402

svc, tinker_client = tinker_fixtures("tinker_equivalence")

RANK = 4
STEPS = 4
TOL = 1e-5
LLAMA_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAM = {
    "learning_rate": 2e-3,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.1,
    "grad_clip_norm": 1.0,
}


def train_config(model_dir: Path, data: Path, init: Path, out: Path, unembed: bool) -> dict:
    """A tunesmith SFT config matching the API model (LoRA r=RANK, alpha 32, no dropout, the
    attention + MLP projections, and the LM head with ``unembed``) and the Adam settings sent
    to ``optim_step``."""
    return {
        "model": str(model_dir),
        "method": "sft",
        "data": {"train": str(data), "eval_fraction": 0},
        "adapter": {
            "type": "lora",
            "r": RANK,
            "alpha": 32,
            "dropout": 0.0,
            "targets": [*LLAMA_LINEARS, "lm_head"] if unembed else "all-linear",
            "init_from": str(init),
        },
        "train": {
            "max_steps": STEPS,
            "batch_size": 2,
            "grad_accum": 2,
            "max_tokens_per_forward": 64,  # several passes per micro-batch: more calls per step
            "max_length": 64,
            "packing": True,
            "seed": 5,
            "lr": ADAM["learning_rate"],
            "scheduler": "constant",
            "warmup_steps": 0,
            "adam_beta1": ADAM["beta1"],
            "adam_beta2": ADAM["beta2"],
            "adam_eps": ADAM["eps"],
            "weight_decay": ADAM["weight_decay"],
            "max_grad_norm": ADAM["grad_clip_norm"],
            "dtype": "fp32",
            "device": "cpu",
            "save_every": 0,
            "eval_every": 0,
            "progress": "none",
        },
        "output_dir": str(out),
    }


def window_datums(batches: list) -> tuple[list[list], int]:
    """The Tinker datums of one optimizer step: a list per forward pass (one datum per example
    of the packed :class:`~tunesmith.data.collate.Batch`), and ``N``, the window's supervised
    tokens. Position ``p`` of a Batch is supervised when ``p`` is in ``target_positions`` (the
    hidden state at ``p`` predicts token ``p + 1``)."""
    from tinker import types

    n = sum(b.n_targets for b in batches)
    calls = []
    for b in batches:
        ids = b.input_ids[0].tolist()
        supervised = set(b.target_positions.tolist())
        assert [ids[p + 1] for p in b.target_positions.tolist()] == b.target_ids.tolist()
        cu = b.cu_seqlens.tolist()
        datums = []
        for lo, hi in zip(cu, cu[1:]):
            weights = [1.0 / n if p in supervised else 0.0 for p in range(lo, hi - 1)]
            datums.append(
                types.Datum(
                    model_input=types.ModelInput.from_ints(ids[lo : hi - 1]),
                    loss_fn_inputs={"target_tokens": ids[lo + 1 : hi], "weights": weights},
                )
            )
        calls.append(datums)
    return calls, n


def download(svc, tc, name: str, dest: Path) -> Path:
    """Checkpoint ``name`` of training client ``tc`` as a PEFT folder, through the REST archive
    route (``GET /api/v1/training_runs/{run}/checkpoints/weights/{name}/archive``)."""
    import httpx

    url = f"{tinker_url(svc)}/api/v1/training_runs/{tc.model_id}/checkpoints/weights/{name}/archive"
    r = httpx.get(url, headers={"X-API-Key": "tml-" + svc.key_a}, timeout=30)
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest / name


@pytest.mark.parametrize("unembed", [False, True], ids=["attn_mlp", "attn_mlp_unembed"])
def test_api_loop_equals_tunesmith_train(svc, tinker_client, tiny_model_dir, color_data, tmp_path, unembed):
    from safetensors.torch import load_file
    from tinker import types

    from tunesmith.cli import main
    from tunesmith.run import prepare
    from tunesmith.rundir import RunDir

    sc = tinker_client()
    tc = sc.create_lora_training_client(
        base_model="tiny", rank=RANK, seed=11, train_attn=True, train_mlp=True, train_unembed=unembed
    ).result()
    tc.save_state("init").result()
    init = download(svc, tc, "init", tmp_path / "ckpt")

    train_file = color_data[0]
    # The engine's windows of every step (the same pure function of data, seed and batch
    # settings that `tunesmith train` walks), from a run prepared in a folder of its own.
    run = prepare(train_config(tiny_model_dir, train_file, init, tmp_path / "windows", unembed))
    windows = [window_datums(run.trainer.window(step)) for step in range(STEPS)]
    assert all(len(calls) >= 2 for calls, _ in windows)  # accumulation across calls is exercised
    del run

    # (b) the API loop
    api_losses, api_norms = [], []
    for calls, _ in windows:
        futures = [tc.forward_backward(datums, "cross_entropy") for datums in calls]
        step = tc.optim_step(types.AdamParams(**ADAM))
        api_losses.append(sum(f.result().metrics["loss:sum"] for f in futures))
        api_norms.append(step.result().metrics["grad_norm"])
    tc.save_state("final").result()
    api_final = load_file(str(download(svc, tc, "final", tmp_path / "ckpt") / "adapter_model.safetensors"))

    # (a) `tunesmith train CONFIG`
    out = tmp_path / "train"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(train_config(tiny_model_dir, train_file, init, out, unembed)))
    assert main(["train", str(config_file)]) == 0
    rows = [r for r in RunDir(out).read_metrics() if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert [r["tokens"] for r in rows] == [n for _, n in windows]
    assert all(r["lr"] == ADAM["learning_rate"] for r in rows)
    ts_final = load_file(str(out / "final" / "adapter_model.safetensors"))

    diffs = [abs(a - r["loss"]) for a, r in zip(api_losses, rows)]
    print(
        "\nper-step |api - train| loss:",
        " ".join(f"{d:.2e}" for d in diffs),
        "| losses:",
        " ".join(f"{r['loss']:.6f}" for r in rows),
    )
    assert max(diffs) <= TOL, (api_losses, [r["loss"] for r in rows])
    assert rows[-1]["loss"] < rows[0]["loss"] - 1e-3  # the steps really trained
    for a, r in zip(api_norms, rows):
        assert a == pytest.approx(r["grad_norm"], rel=1e-4)
    assert any(n > ADAM["grad_clip_norm"] for n in api_norms)  # the clip acted on some step

    assert api_final.keys() == ts_final.keys()
    assert any("lm_head" in k for k in api_final) == unembed
    init_weights = load_file(str(init / "adapter_model.safetensors"))
    worst = max(float((api_final[k] - ts_final[k]).abs().max()) for k in api_final)
    moved = max(float((api_final[k] - init_weights[k]).abs().max()) for k in api_final)
    print(f"final adapter: max |api - train| {worst:.2e}, max |final - init| {moved:.2e}")
    assert moved > 1e-3
    for key in api_final:
        torch.testing.assert_close(api_final[key], ts_final[key], rtol=1e-5, atol=1e-6, msg=key)
