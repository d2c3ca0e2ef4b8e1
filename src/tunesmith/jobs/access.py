"""Which ``ft:`` models a project may use: its own, and checkpoints shared with it by permission.

A project owns the models of its succeeded jobs (until deleted) and their checkpoint models
(``…:ckpt-step-N``). Another project reaches a model only through a checkpoint permission
(P1-P3, spec section 4.3), and only the checkpoint named in the permission: the job's final
model and its other checkpoints stay private. Whatever a project may not use answers exactly
like a model that does not exist (404 ``model_not_found``), so existence is never leaked.
"""

from __future__ import annotations

from ..serve.protocol import APIError
from . import ids
from .errors import model_not_found
from .objects import job_model_id, model_object
from .store import Store


class ModelAccess:
    def __init__(self, store: Store, owner: str):
        self.store, self.owner = store, owner

    def _resolve(self, row: dict | None, ref: ids.ModelRef, model: str) -> tuple[dict, int | None]:
        """(row, step) when ``row`` made ``model`` and the model still exists; else 404."""
        if row is None or row["model_deleted"] or job_model_id(row, self.owner) != ref.model_id:
            raise model_not_found(model)
        if ref.step is None and row["status"] != "succeeded":
            raise model_not_found(model)
        if ref.step is not None and not any(
            c["step_number"] == ref.step for c in self.store.list_checkpoints(row["id"], limit=10000)[0]
        ):
            raise model_not_found(model)
        return row, ref.step

    def own(self, project_id: str, model: str) -> tuple[dict, int | None]:
        """(the job that made ``model``, checkpoint step or None), for the owning project only."""
        ref = ids.parse_ft_model(model)
        if ref is None:
            raise model_not_found(model)
        return self._resolve(self.store.find_model_job(project_id, ref.key), ref, model)

    def usable(self, project_id: str, model: str) -> tuple[dict, int | None]:
        """Like :meth:`own`, or a checkpoint model another project granted to ``project_id``."""
        try:
            return self.own(project_id, model)
        except APIError:
            ref = ids.parse_ft_model(model)
            grant = self.store.permission_for(model, project_id) if ref is not None and ref.step else None
            if grant is None:
                raise
            return self._resolve(self.store.get_job(None, grant["job_id"]), ref, model)

    def shared_with(self, project_id: str) -> list[tuple[str, dict, int]]:
        """(checkpoint model, its job, step) for every checkpoint granted to ``project_id`` that
        still exists, in grant order."""
        out = []
        for grant in self.store.granted_to(project_id):
            try:
                row, step = self.usable(project_id, grant["checkpoint"])
            except APIError:
                continue
            out.append((grant["checkpoint"], row, step))
        return out

    def model_object(self, model: str, row: dict, step: int | None) -> dict:
        """The model object of ``model`` (made by job ``row``; a checkpoint at ``step``), the
        same in every route that shows it: ``created`` is the checkpoint's creation time, or for
        a final model the job's finish; ``owned_by`` the owning project."""
        created = row["finished_at"] or row["created_at"]
        if step is not None:
            created = next(
                (
                    c["created_at"]
                    for c in self.store.list_checkpoints(row["id"], limit=10000)[0]
                    if c["step_number"] == step
                ),
                created,
            )
        return model_object(model, created, row["project_id"])
