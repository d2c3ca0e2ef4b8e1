"""Create-job validation (OpenAI's ranges), "auto" resolution, ids and key hashing."""

from __future__ import annotations

import re

import pytest

from tunesmith.jobs import ids
from tunesmith.jobs.spec import normalise_create, resolve_method
from tunesmith.serve.protocol import APIError

BASE = {"model": "tiny", "training_file": "file-abc"}


def _err(body) -> APIError:
    with pytest.raises(APIError) as info:
        normalise_create(body)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    return info.value


@pytest.mark.parametrize(
    "body, param",
    [
        ({"training_file": "file-abc"}, "model"),
        ({"model": "tiny"}, "training_file"),
        ({**BASE, "suffix": "x" * 65}, "suffix"),
        ({**BASE, "suffix": "../../x"}, "suffix"),
        ({**BASE, "seed": -1}, "seed"),
        ({**BASE, "seed": 2**31}, "seed"),
        ({**BASE, "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({**BASE, "metadata": {"k" * 65: "v"}}, "metadata"),
        ({**BASE, "metadata": {"k": "v" * 513}}, "metadata"),
        ({**BASE, "method": {"type": "reinforcement"}}, "method.reinforcement"),  # no grader
        ({**BASE, "method": {"type": "banana"}}, "method.type"),
        ({**BASE, "hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({**BASE, "hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
        ({**BASE, "hyperparameters": {"batch_size": 257}}, "hyperparameters.batch_size"),
        (
            {**BASE, "hyperparameters": {"learning_rate_multiplier": 0}},
            "hyperparameters.learning_rate_multiplier",
        ),
        (
            {**BASE, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}},
            "method.dpo.hyperparameters.beta",
        ),
        (
            {**BASE, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
            "method.dpo.hyperparameters.beta",
        ),
        (
            {**BASE, "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": True}}}},
            "method.supervised.hyperparameters.n_epochs",
        ),
    ],
)
def test_out_of_range_values_name_their_param(body, param):
    assert _err(body).param == param


def test_limits_are_inclusive():
    ok = normalise_create(
        {
            **BASE,
            "suffix": "x" * 64,
            "seed": 2147483647,
            "metadata": {"k" * 64: "v" * 512, **{f"m{i}": "" for i in range(15)}},
            "hyperparameters": {"n_epochs": 50, "batch_size": 256, "learning_rate_multiplier": 1e-9},
        }
    )
    assert ok["method"]["supervised"]["hyperparameters"] == {
        "batch_size": 256,
        "learning_rate_multiplier": 1e-9,
        "n_epochs": 50,
    }
    beta = normalise_create({**BASE, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2}}}})
    assert beta["method"]["dpo"]["hyperparameters"]["beta"] == 2


def test_defaults_echo_auto_and_legacy_hyperparameters_map_to_supervised():
    assert normalise_create(BASE)["method"] == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"}
        },
    }
    legacy = normalise_create({**BASE, "hyperparameters": {"n_epochs": 4}})
    assert legacy["method"]["supervised"]["hyperparameters"]["n_epochs"] == 4
    dpo = normalise_create({**BASE, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}})
    assert dpo["method"] == {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {
                "batch_size": "auto",
                "learning_rate_multiplier": "auto",
                "n_epochs": "auto",
                "beta": 0.1,
            }
        },
    }


@pytest.mark.parametrize("n, epochs", [(10, 10), (33, 3), (100, 3), (10000, 2)])
def test_auto_epochs_follow_the_cookbook_rule(n, epochs):
    # 3n < 100 -> min(25, 100 // n): n=10 -> 10; 3*33 = 99 < 100 -> 100 // 33 = 3;
    # 300 within [100, 25000] -> 3; 30000 > 25000 -> 25000 // 10000 = 2.
    method = resolve_method(normalise_create(BASE)["method"], n)
    assert method["supervised"]["hyperparameters"]["n_epochs"] == epochs


def test_auto_resolution_fills_every_field_and_keeps_given_values():
    m = normalise_create({**BASE, "method": {"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 3}}}})[
        "method"
    ]
    h = resolve_method(m, 4000)["dpo"]["hyperparameters"]
    # batch: 0.2 % of 4000 = 8 (a power of two, <= 32); lr multiplier 1.0; beta 0.1 (DPO paper).
    assert h == {"batch_size": 3, "learning_rate_multiplier": 1.0, "n_epochs": 3, "beta": 0.1}
    assert m["dpo"]["hyperparameters"]["n_epochs"] == "auto"  # the input is not modified


FT = re.compile(r"^ft:[^:]+:[^:]+:[^:]*:[A-Za-z0-9]{8}$")


def test_model_ids_round_trip_and_reject_malformed():
    key = ids.model_key()
    mid = ids.ft_model_id("tiny", "personal", None, key)
    assert FT.match(mid) and mid == f"ft:tiny:personal::{key}"
    ref = ids.parse_ft_model(mid + ":ckpt-step-12")
    assert (ref.base, ref.suffix, ref.key, ref.step, ref.model_id) == ("tiny", "", key, 12, mid)
    for bad in [
        "ft:../../etc",
        "ft:a:b:c",
        f"ft:..:o::{key}",
        f"ft:a/b:o::{key}",
        f"ft:a:o::{key}:ckpt-x",
        "gpt:a:o::abcdefgh",
        f"ft:a:o:s p:{key}",
    ]:
        assert ids.parse_ft_model(bad) is None, bad


def test_object_ids_have_openai_shapes():
    assert re.match(r"^file-[A-Za-z0-9]{22}$", ids.file_id())
    assert re.match(r"^ftjob-[A-Za-z0-9]{24}$", ids.job_id())
    assert ids.job_id() != ids.job_id()


def test_keys_are_stored_hashed_and_compared_in_constant_time(monkeypatch):
    key = ids.new_api_key()
    h = ids.hash_key(key)
    assert key not in h and len(h) == 64 and ids.keys_match(h, ids.hash_key(key))
    assert not ids.keys_match(h, ids.hash_key(key + "x"))
    calls = []
    import hmac

    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    ids.keys_match(h, h)
    assert calls, "keys_match must use hmac.compare_digest"


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("../../../../etc/pwn.txt", ".._.._.._.._etc_pwn.txt"),
        ("..\\..\\x", ".._.._x"),
        ("/etc/passwd", "_etc_passwd"),
        ("a\x00b\nc", "abc"),
        ("", "upload"),
    ],
)
def test_filenames_are_metadata_without_separators_or_controls(raw, clean):
    assert ids.clean_filename(raw) == clean
    assert len(ids.clean_filename("x" * 4096)) == 255
