"""Checkpoint permissions (P1-P3) through the official SDK, and their effect: project alpha's
admin key shares a checkpoint model with project beta, which may then list it and chat with it
(and nothing else of alpha's); the permission's deletion takes that away again. No training: the
job's output is written as a worker and the checkpoint export write it (a real LoRA adapter)."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest
from jobs_harness import chat_rows, service_fixtures, upload

pytest.importorskip("fastapi")
pytestmark = pytest.mark.filterwarnings("ignore:Retrieve is deprecated:DeprecationWarning")  # P2 retrieve
svc, client = service_fixtures("perms")


@pytest.fixture(scope="module")
def admin(svc):
    key, _ = svc.store.create_key("alpha", admin=True)  # alpha's, like svc.key_a
    return svc.client(key)


@pytest.fixture(scope="module")
def trained(svc, client, tiny_model_dir):
    """Alpha's succeeded job with checkpoints at steps 3 and 6; step 3 and the final model are
    real LoRA adapters (random non-zero weights, so they answer differently from the base)."""
    import torch

    from tunesmith.config import AdapterConfig
    from tunesmith.jobs import ids
    from tunesmith.models.adapters import attach_adapter
    from tunesmith.models.load import load_causal_lm, load_tokenizer

    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=upload(client, chat_rows(10)).id, suffix="s"
    )
    row = svc.store.get_job(None, job.id)
    model = f"ft:tiny:personal:s:{row['model_key']}"
    svc.store.update_job(job.id, status="succeeded", fine_tuned_model=model, finished_at=row["created_at"])
    run = svc.settings.run_dir(job.id)
    lm = attach_adapter(load_causal_lm(str(tiny_model_dir)), AdapterConfig(r=4, targets=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    for folder in (run / "final", run / "served-checkpoints" / "step-000003"):
        lm.save_pretrained(folder, safe_serialization=True)
        load_tokenizer(str(tiny_model_dir)).save_pretrained(folder)
    for step in (3, 6):
        svc.store.add_checkpoint(
            {
                "id": ids.checkpoint_id(),
                "job_id": job.id,
                "created_at": row["created_at"],
                "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{step}",
                "step_number": step,
                "metrics": {"step": step},
            }
        )
    return {"model": model, "ckpt": f"{model}:ckpt-step-3", "other_ckpt": f"{model}:ckpt-step-6"}


def _project(svc, key) -> str:
    return svc.store.project_for_key(key)["id"]


def _ask(client, model):
    return client.chat.completions.create(
        model=model, max_tokens=2, temperature=0, messages=[{"role": "user", "content": "sky?"}]
    )


def test_only_admin_keys_manage_permissions(svc, client, trained):
    perms = client.fine_tuning.checkpoints.permissions
    beta = _project(svc, svc.key_b)
    for call in (
        lambda: perms.create(trained["ckpt"], project_ids=[beta]),
        lambda: perms.retrieve(trained["ckpt"]),
        lambda: list(perms.list(trained["ckpt"])),
        lambda: perms.delete("cp_" + "x" * 24, fine_tuned_model_checkpoint=trained["ckpt"]),
        # refused before the checkpoint is looked up: a non-admin key learns nothing
        lambda: perms.retrieve("ft:tiny:personal::NotHere1:ckpt-step-1"),
    ):
        with pytest.raises(openai.PermissionDeniedError) as info:
            call()
        assert info.value.type == "permission_error" and "admin API key" in info.value.message
        assert info.value.response.headers["x-should-retry"] == "false"


def test_create_list_and_delete_permissions(svc, admin, trained):
    perms = admin.fine_tuning.checkpoints.permissions
    beta = _project(svc, svc.key_b)
    created = perms.create(trained["ckpt"], project_ids=[beta])
    [p] = created.data
    assert p.model_dump() == {
        "id": p.id,
        "object": "checkpoint.permission",
        "created_at": p.created_at,
        "project_id": beta,
    }
    assert p.id.startswith("cp_") and len(p.id) == 27
    assert perms.create(trained["ckpt"], project_ids=[beta]).data[0].id == p.id  # granted once
    # Paging: the list paginator follows last_id across 3 pages of 3.
    extra = [svc.store.create_key(f"proj-{i}")[1]["id"] for i in range(7)]
    perms.create(trained["ckpt"], project_ids=extra)
    before = len(svc.requests)
    listed = list(perms.list(trained["ckpt"], limit=3))
    assert [x.project_id for x in listed] == [*extra[::-1], beta]  # newest first by default
    path = f"/v1/fine_tuning/checkpoints/{trained['ckpt']}/permissions"
    assert [m for m, q in svc.requests[before:] if q == path] == ["GET"] * 3
    page = perms.list(trained["ckpt"], limit=3, order="ascending")
    assert [x.project_id for x in page.data] == [beta, *extra[:2]] and page.has_more
    assert page.last_id == page.data[-1].id
    got = perms.retrieve(trained["ckpt"], project_id=extra[3])  # the deprecated list call
    assert [x.project_id for x in got.data] == [extra[3]] and got.has_more is False
    assert got.first_id == got.last_id == got.data[0].id
    # Bad input
    with pytest.raises(openai.BadRequestError) as info:
        perms.create(trained["ckpt"], project_ids=["proj_doesnotexist"])
    assert info.value.param == "project_ids"
    with pytest.raises(openai.BadRequestError) as info:
        perms.list(trained["ckpt"], order="sideways")
    assert info.value.param == "order"
    for ckpt in (
        trained["model"],
        "ft:tiny:personal::NotHere1:ckpt-step-3",
    ):  # a final model is no checkpoint
        with pytest.raises(openai.NotFoundError):
            perms.create(ckpt, project_ids=[beta])
    # Delete
    gone = perms.delete(listed[0].id, fine_tuned_model_checkpoint=trained["ckpt"])
    assert gone.model_dump() == {"id": listed[0].id, "object": "checkpoint.permission", "deleted": True}
    assert listed[0].id not in [x.id for x in perms.list(trained["ckpt"])]
    with pytest.raises(openai.NotFoundError):
        perms.delete(listed[0].id, fine_tuned_model_checkpoint=trained["ckpt"])


def test_another_projects_admin_sees_alphas_checkpoint_as_missing(svc, trained):
    key, _ = svc.store.create_key("beta", admin=True)
    b = httpx.Client(base_url=svc.base_url, headers={"Authorization": f"Bearer {key}"})
    fake = "ft:tiny:personal::NotHere1:ckpt-step-3"
    for method, tail, body in (
        ("GET", "", None),
        ("POST", "", {"project_ids": [_project(svc, key)]}),
        ("DELETE", "/cp_" + "x" * 24, None),
    ):
        real = b.request(method, f"/fine_tuning/checkpoints/{trained['ckpt']}/permissions{tail}", json=body)
        missing = b.request(method, f"/fine_tuning/checkpoints/{fake}/permissions{tail}", json=body)
        assert real.status_code == missing.status_code == 404
        assert real.json()["error"] == {
            **missing.json()["error"],
            "message": missing.json()["error"]["message"].replace(fake, trained["ckpt"]),
        }


def test_a_permission_shares_that_checkpoint_and_nothing_else(svc, admin, trained):
    b = svc.client(svc.key_b)
    beta = _project(svc, svc.key_b)
    perms = admin.fine_tuning.checkpoints.permissions
    for p in perms.list(trained["ckpt"], project_id=beta):  # start without a grant
        perms.delete(p.id, fine_tuned_model_checkpoint=trained["ckpt"])
    with pytest.raises(openai.NotFoundError) as before:
        _ask(b, trained["ckpt"])
    with pytest.raises(openai.NotFoundError) as missing:
        _ask(b, "ft:tiny:personal:s:NotHere1:ckpt-step-3")
    assert before.value.code == missing.value.code == "model_not_found"
    assert trained["ckpt"] not in [m.id for m in b.models.list()]

    grant = perms.create(trained["ckpt"], project_ids=[beta]).data[0]
    reply = _ask(b, trained["ckpt"])
    assert reply.model == trained["ckpt"] and reply.usage.completion_tokens <= 2
    listed = {m.id: m for m in b.models.list()}
    assert listed[trained["ckpt"]].owned_by == _project(svc, svc.key_a)
    assert b.models.retrieve(trained["ckpt"]).id == trained["ckpt"]
    # Only that checkpoint: not the final model, not another checkpoint; and it is not beta's to delete.
    for model in (trained["model"], trained["other_ckpt"]):
        with pytest.raises(openai.NotFoundError):
            _ask(b, model)
        assert model not in listed
    with pytest.raises(openai.NotFoundError):
        b.models.delete(trained["ckpt"])

    perms.delete(grant.id, fine_tuned_model_checkpoint=trained["ckpt"])
    with pytest.raises(openai.NotFoundError):
        _ask(b, trained["ckpt"])
    assert trained["ckpt"] not in [m.id for m in b.models.list()]
