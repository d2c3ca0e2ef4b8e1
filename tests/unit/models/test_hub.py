"""Hub ids as model names (models/hub.py), tested without network: the id is recognised, offline
it is one clear line, and a snapshot already in the Hub cache loads like a local folder."""

from __future__ import annotations

import shutil

import pytest
from huggingface_hub import constants

from tunesmith.errors import ModelError
from tunesmith.models.hub import is_hub_id, model_name
from tunesmith.models.load import check_model_dir, load_causal_lm, load_tokenizer


@pytest.mark.parametrize(
    "name", ["meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-0.5B-Instruct", "HuggingFaceTB/SmolLM2-135M"]
)
def test_hub_ids_are_recognised(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id(name)
    assert model_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["./models/x", "/abs/model", "a/b/c", "model", "org/model.gguf", "org--x/y", "org/../y", "-org/x"],
)
def test_paths_are_not_hub_ids(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id(name)


def test_an_existing_local_folder_wins_over_the_hub_reading(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert not is_hub_id("org/model")
    assert model_name("org/model") == "model"  # a local folder is named by its folder name


def test_offline_hub_id_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as err:
        check_model_dir("meta-llama/Llama-3.2-1B")
    msg = str(err.value)
    assert "\n" not in msg
    assert "meta-llama/Llama-3.2-1B" in msg and "HF_HUB_OFFLINE is set" in msg
    assert "hf download meta-llama/Llama-3.2-1B --local-dir models/llama-3.2-1b" in msg
    assert ".gguf" in msg and "local Hugging Face folder" in msg


def _cached_snapshot(cache, tiny_model_dir, repo="acme/tiny-chat", sha="0" * 40):
    """A Hub cache entry laid out as huggingface_hub writes it (refs/main -> snapshots/SHA)."""
    entry = cache / ("models--" + repo.replace("/", "--"))
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(sha)
    snapshot = entry / "snapshots" / sha
    shutil.copytree(tiny_model_dir, snapshot)
    return snapshot


def test_cached_hub_model_loads_offline_and_keeps_its_id(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    snapshot = _cached_snapshot(tmp_path / "hub", tiny_model_dir)
    assert check_model_dir("acme/tiny-chat") == snapshot
    assert model_name(str(snapshot)) == "acme/tiny-chat"  # a cache folder is named by its id
    model = load_causal_lm("acme/tiny-chat")
    assert model.name_or_path == "acme/tiny-chat"  # what adapters record as their base
    assert load_tokenizer("acme/tiny-chat").chat_template


def test_hub_repo_without_safetensors_is_refused(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    snapshot = _cached_snapshot(tmp_path / "hub", tiny_model_dir)
    for f in snapshot.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelError, match="no safetensors weights"):
        check_model_dir("acme/tiny-chat")


def test_gguf_file_is_named_by_its_file_name(tmp_path):
    assert model_name(str(tmp_path / "smollm2-135m-instruct.q4_1.gguf")) == "smollm2-135m-instruct.q4_1.gguf"
