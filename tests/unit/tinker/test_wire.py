"""tunesmith.tinker.wire against the real ``tinker`` SDK's own types and (de)serialisers.

Requests are built with the SDK's public types and serialised by the exact code its
``AsyncTrainingResource.forward_backward`` runs before sending (``forward_backward_request_to_proto``
+ ``SerializeToString`` + ``zstd.ZstdCompressor().compress``), or, for the JSON form, dumped by the
SDK's pydantic ``ForwardBackwardInput``. Responses are parsed back by the SDK's own
``deserialize_proto_response``, the function its futures call on a protobuf result.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

tinker = pytest.importorskip(
    "tinker", reason="the tinker SDK is not installed (pip install 'tunesmith[tinker]')"
)
zstd = pytest.importorskip("zstandard", reason="zstandard (a tinker dependency) is not installed")

from tinker import types as T  # noqa: E402
from tinker.proto.request_conv import forward_backward_request_to_proto  # noqa: E402
from tinker.proto.response_conv import deserialize_proto_response  # noqa: E402
from tinker.types._pydantic_types.forward_backward_input import (  # noqa: E402
    ForwardBackwardInput as PydanticForwardBackwardInput,
)

from tunesmith.tinker.wire import (  # noqa: E402
    PROTO_CONTENT_TYPE,
    WireError,
    decode_forward_backward,
    encode_forward_backward_output,
)


def _datums():
    """Two datums covering issue 21's loss inputs: multi-chunk input, RL keys, a 2-D (top-K)
    target that the SDK sends sparse (CSR) and one it sends dense."""
    d0 = T.Datum(
        model_input=T.ModelInput(
            chunks=[T.EncodedTextChunk(tokens=[5, 17, 3]), T.EncodedTextChunk(tokens=[99, 0])]
        ),
        loss_fn_inputs={
            "target_tokens": [17, 3, 99, 0, 7],
            "weights": torch.tensor([0.0, 0.0, 1.0, 1.0, 0.5]),
            "advantages": np.array([0.0, 0.0, 1.5, -2.25, 0.125], dtype=np.float32),
            "logprobs": torch.tensor([0.0, 0.0, -1.25, -0.5, -3.0]),
        },
    )
    d1 = T.Datum(
        model_input=T.ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={
            # top-K targets and weights, mostly padding: the SDK sends them as sparse CSR
            "target_tokens": torch.tensor([[2, 0, 0, 0, 0], [3, 4, 0, 0, 0], [0, 0, 0, 0, 0]]),
            "weights": torch.tensor([[1.0, 0, 0, 0, 0], [0.75, 0.25, 0, 0, 0], [0, 0, 0, 0, 0]]),
        },
    )
    return [d0, d1]


def _sdk_body(request, *, forward_only=False, compress=False) -> bytes:
    """Exactly what AsyncTrainingResource.forward_backward puts on the wire (tinker 0.38)."""
    msg = forward_backward_request_to_proto(request)
    msg.forward_only = forward_only
    body = msg.SerializeToString()
    return zstd.ZstdCompressor().compress(body) if compress else body


def _request(loss_fn="ppo", config=None):
    fbi = T.ForwardBackwardInput(data=_datums(), loss_fn=loss_fn, loss_fn_config=config)
    return T.ForwardBackwardRequest(forward_backward_input=fbi, model_id="model-abc", seq_id=7)


def _check_round_trip(decoded, sdk_data):
    assert len(decoded.data) == len(sdk_data)
    for got, sent in zip(decoded.data, sdk_data):
        assert got.tokens == sent.model_input.to_ints()
        assert got.chunk_lengths == [c.length for c in sent.model_input.chunks]
        assert set(got.loss_fn_inputs) == set(sent.loss_fn_inputs)
        for key, td in sent.loss_fn_inputs.items():
            want = td.to_torch()
            assert got.loss_fn_inputs[key].dtype == want.dtype, key
            assert torch.equal(got.loss_fn_inputs[key], want), key


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("forward_only", [False, True])
def test_proto_round_trip(compress, forward_only):
    req = _request("ppo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1})
    sparse = forward_backward_request_to_proto(req).data[1].loss_fn_inputs["weights"]
    assert sparse.WhichOneof("encoding") == "sparse_csr"  # the CSR path is really exercised
    decoded = decode_forward_backward(
        _sdk_body(req, forward_only=forward_only, compress=compress),
        "application/x-protobuf",
        "zstd" if compress else None,
    )
    assert (decoded.model_id, decoded.seq_id, decoded.loss_fn) == ("model-abc", 7, "ppo")
    assert decoded.forward_only is forward_only
    assert decoded.loss_fn_config == pytest.approx({"clip_low_threshold": 0.9, "clip_high_threshold": 1.1})
    _check_round_trip(decoded, req.forward_backward_input.data)


@pytest.mark.filterwarnings("ignore:The `construct` method is deprecated")  # the SDK's own pydantic use
@pytest.mark.parametrize("compress", [False, True])
def test_bodies_the_sdk_http_client_really_sends(compress):
    """The SDK's own client (``AsyncTinker.training.forward_backward``, what TrainingClient calls)
    over an in-process httpx transport: path, headers and body exactly as they reach a server."""
    import asyncio

    import httpx
    from tinker._client import AsyncTinker
    from tinker.types import ClientConfigResponse

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"request_id": "req-1"})

    async def send():
        client = AsyncTinker(
            api_key="tml-test",
            base_url="http://tunesmith.test",
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
            _client_config=ClientConfigResponse(proto_compress_fwdbwd=compress),
            max_retries=0,
        )
        return await client.training.forward_backward(request=_request("cispo"), forward_only=True)

    assert asyncio.run(send()).request_id == "req-1"
    (request,) = seen
    assert request.url.path == "/api/v1/forward_backward"
    assert request.headers.get("content-encoding") == ("zstd" if compress else None)
    decoded = decode_forward_backward(
        request.content, request.headers["content-type"], request.headers.get("content-encoding")
    )
    assert (decoded.loss_fn, decoded.forward_only, decoded.model_id) == ("cispo", True, "model-abc")
    _check_round_trip(decoded, _datums())


def test_proto_config_strings_and_legacy_float_map():
    req = _request("dro", {"beta": 0.25, "mode": "sum"})
    assert decode_forward_backward(_sdk_body(req), PROTO_CONTENT_TYPE).loss_fn_config == {
        "beta": 0.25,
        "mode": "sum",
    }
    # an older client writes only the legacy float map (the SDK mirrors numbers there, not strings)
    msg = forward_backward_request_to_proto(req)
    msg.ClearField("loss_fn_config_v2")
    assert decode_forward_backward(msg.SerializeToString(), PROTO_CONTENT_TYPE).loss_fn_config == {
        "beta": 0.25
    }
    none = decode_forward_backward(_sdk_body(_request("cross_entropy")), PROTO_CONTENT_TYPE)
    assert none.loss_fn_config == {} and none.loss_fn == "cross_entropy"


def test_json_round_trip():
    req = _request("importance_sampling", {"beta": 0.5})
    fbi = PydanticForwardBackwardInput.model_validate(
        {
            "data": [
                {
                    "model_input": d.model_input.model_dump(),
                    "loss_fn_inputs": {k: v.to_torch() for k, v in d.loss_fn_inputs.items()},
                }
                for d in req.forward_backward_input.data
            ],
            "loss_fn": "importance_sampling",
            "loss_fn_config": {"beta": 0.5},
        }
    )
    doc = {"forward_backward_input": fbi.model_dump(mode="json"), "model_id": "model-abc", "seq_id": 3}
    assert doc["forward_backward_input"]["data"][1]["loss_fn_inputs"]["weights"][
        "sparse_crow_indices"
    ]  # CSR in JSON too
    decoded = decode_forward_backward(json.dumps(doc).encode(), "application/json; charset=utf-8")
    assert (decoded.model_id, decoded.seq_id, decoded.loss_fn, decoded.forward_only) == (
        "model-abc",
        3,
        "importance_sampling",
        False,
    )
    assert decoded.loss_fn_config == {"beta": 0.5}
    _check_round_trip(decoded, req.forward_backward_input.data)
    doc["forward_only"] = True
    assert decode_forward_backward(
        zstd.ZstdCompressor().compress(json.dumps(doc).encode()), "application/json", "zstd"
    ).forward_only


def test_response_parsed_by_the_sdk():
    lp0 = torch.tensor([-0.5, -1.25, -3.0], requires_grad=True)  # a graph tensor, as the engine has
    lp1 = torch.tensor([-0.125])
    body = encode_forward_backward_output(
        [{"logprobs": lp0, "elementwise_loss": lp0 * 2}, {"logprobs": lp1, "elementwise_loss": lp1}],
        {"loss:sum": 4.875},
    )
    out = deserialize_proto_response(body, T.ForwardBackwardOutput)
    assert isinstance(out, T.ForwardBackwardOutput)
    assert out.metrics == {"loss:sum": 4.875}
    assert len(out.loss_fn_outputs) == 2
    assert out.loss_fn_outputs[0]["logprobs"].dtype == "float32"
    assert out.loss_fn_outputs[0]["logprobs"].shape == [3]
    assert out.loss_fn_outputs[0]["logprobs"].tolist() == [-0.5, -1.25, -3.0]
    assert out.loss_fn_outputs[0]["elementwise_loss"].tolist() == [-1.0, -2.5, -6.0]
    assert out.loss_fn_outputs[1]["logprobs"].tolist() == [-0.125]


def test_response_ragged_trailing_shapes_and_empty():
    """Top-K log-probs of different K per datum go out as separate records and come back intact."""
    a, b = torch.arange(6.0).reshape(3, 2), torch.arange(4.0).reshape(1, 4)
    out = deserialize_proto_response(
        encode_forward_backward_output([{"logprobs": a}, {"logprobs": b}], {}), T.ForwardBackwardOutput
    )
    assert [o["logprobs"].shape for o in out.loss_fn_outputs] == [[3, 2], [1, 4]]
    assert torch.equal(out.loss_fn_outputs[0]["logprobs"].to_torch(), a)
    assert torch.equal(out.loss_fn_outputs[1]["logprobs"].to_torch(), b)
    empty = deserialize_proto_response(
        encode_forward_backward_output([], {"loss:sum": 0.0}), T.ForwardBackwardOutput
    )
    assert empty.loss_fn_outputs == [] and empty.metrics == {"loss:sum": 0.0}
    with pytest.raises(ValueError, match=r"loss_fn_outputs\[1\]"):
        encode_forward_backward_output([{"logprobs": a}, {"other": a}], {})


# ---- hostile input ---------------------------------------------------------------------------


def _proto(mutate) -> bytes:
    msg = forward_backward_request_to_proto(_request())
    mutate(msg)
    return msg.SerializeToString()


def _json(mutate) -> bytes:
    doc = {
        "model_id": "m",
        "seq_id": 1,
        "forward_backward_input": {
            "loss_fn": "cross_entropy",
            "data": [
                {
                    "model_input": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
                    "loss_fn_inputs": {"target_tokens": {"data": [2, 3, 4], "dtype": "int64", "shape": [3]}},
                }
            ],
        },
    }
    mutate(doc)
    return json.dumps(doc).encode()


def _raises(body, content_type, field, match, encoding=None, **kw):
    with pytest.raises(WireError, match=match) as info:
        decode_forward_backward(body, content_type, encoding, **kw)
    assert info.value.field == field
    return info.value


def _set_image(msg):
    msg.data[0].model_input[1].image.data = b"\x89PNG"
    msg.data[0].model_input[1].image.format = "png"


def _fi(doc):
    return doc["forward_backward_input"]["data"][0]


@pytest.mark.parametrize(
    ("body", "content_type", "field", "match"),
    [
        (b"\xff\x00garbage\x13\x37", PROTO_CONTENT_TYPE, None, "not a ForwardBackwardRequest protobuf"),
        (b"{}", "text/plain", "Content-Type", "unsupported content type"),
        (b"{}", None, "Content-Type", "unsupported content type"),
        (b"\xff\xfe{", "application/json", None, "not UTF-8"),
        (b"{not json", "application/json", None, "not valid JSON"),
        (b"[1, 2]", "application/json", None, "must be a JSON object"),
        (
            _proto(_set_image),
            PROTO_CONTENT_TYPE,
            "data[0].model_input.chunks[1]",
            "image chunks are not supported",
        ),
        (
            _proto(lambda m: m.data[0].model_input[0].dmel.SetInParent()),
            PROTO_CONTENT_TYPE,
            "data[0].model_input.chunks[0]",
            "audio",
        ),
        (
            _proto(lambda m: m.data[0].model_input.add()),
            PROTO_CONTENT_TYPE,
            "data[0].model_input.chunks[2]",
            "empty chunks",
        ),
        (
            _proto(lambda m: setattr(m.data[0].model_input[0].encoded_text, "tokens", b"\x01\x02\x03")),
            PROTO_CONTENT_TYPE,
            "data[0].model_input.chunks[0].tokens",
            "whole number of int32",
        ),
        (
            _proto(
                lambda m: setattr(
                    m.data[0].model_input[0].encoded_text, "tokens", np.array([-4], "<i4").tobytes()
                )
            ),
            PROTO_CONTENT_TYPE,
            "data[0].model_input.chunks[0].tokens",
            "negative",
        ),
        (
            _proto(lambda m: m.data[0].loss_fn_inputs["weights"].shape.append(2)),
            PROTO_CONTENT_TYPE,
            "data[0].loss_fn_inputs.weights.shape",
            r"shape \[5, 2\] holds 10 elements but the data has 5",
        ),
        (
            _proto(lambda m: setattr(m.data[0].loss_fn_inputs["logprobs"], "dense", b"\x00" * 7)),
            PROTO_CONTENT_TYPE,
            "data[0].loss_fn_inputs.logprobs.dense",
            "4-byte elements",
        ),
        (
            _proto(lambda m: setattr(m.data[0].loss_fn_inputs["logprobs"], "dtype", 0)),
            PROTO_CONTENT_TYPE,
            "data[0].loss_fn_inputs.logprobs.dtype",
            "unsupported dtype",
        ),
        (
            _proto(
                lambda m: setattr(
                    m.data[1].loss_fn_inputs["weights"].sparse_csr,
                    "crow_indices",
                    np.array([0, 5, 1, 2], "<i8").tobytes(),
                )
            ),
            PROTO_CONTENT_TYPE,
            "data[1].loss_fn_inputs.weights.sparse_crow_indices",
            "row pointers",
        ),
        (
            _proto(
                lambda m: setattr(
                    m.data[1].loss_fn_inputs["weights"].sparse_csr,
                    "col_indices",
                    np.array([0, 0, 9], "<i8").tobytes(),
                )
            ),
            PROTO_CONTENT_TYPE,
            "data[1].loss_fn_inputs.weights.sparse_col_indices",
            "outside",
        ),
        (
            _proto(lambda m: m.data[1].loss_fn_inputs["weights"].shape.extend([10**6, 10**6])),
            PROTO_CONTENT_TYPE,
            "data[1].loss_fn_inputs.weights.shape",
            "2-D shape",
        ),
        (_proto(lambda m: setattr(m, "model_id", "")), PROTO_CONTENT_TYPE, "model_id", "non-empty"),
        (_proto(lambda m: setattr(m, "loss_fn", "")), PROTO_CONTENT_TYPE, "loss_fn", "non-empty"),
        (
            _json(lambda d: _fi(d)["model_input"]["chunks"][0]["tokens"].__setitem__(1, 2.5)),
            "application/json",
            "forward_backward_input.data[0].model_input.chunks[0].tokens[1]",
            "not a token id",
        ),
        (
            _json(lambda d: _fi(d)["model_input"]["chunks"][0]["tokens"].__setitem__(0, "7")),
            "application/json",
            "forward_backward_input.data[0].model_input.chunks[0].tokens[0]",
            "not a token id",
        ),
        (
            _json(lambda d: _fi(d)["model_input"]["chunks"][0]["tokens"].__setitem__(0, True)),
            "application/json",
            "forward_backward_input.data[0].model_input.chunks[0].tokens[0]",
            "not a token id",
        ),
        (
            _json(
                lambda d: _fi(d)["model_input"]["chunks"].append(
                    {"type": "image", "data": "", "format": "png"}
                )
            ),
            "application/json",
            "forward_backward_input.data[0].model_input.chunks[1].type",
            "'image' chunks are not supported",
        ),
        (
            _json(lambda d: _fi(d)["loss_fn_inputs"]["target_tokens"].__setitem__("shape", [2, 2])),
            "application/json",
            "forward_backward_input.data[0].loss_fn_inputs.target_tokens.shape",
            "holds 4 elements but the data has 3",
        ),
        (
            _json(lambda d: _fi(d)["loss_fn_inputs"]["target_tokens"]["data"].__setitem__(2, 4.5)),
            "application/json",
            "forward_backward_input.data[0].loss_fn_inputs.target_tokens.data[2]",
            "not an integer",
        ),
        (
            _json(lambda d: _fi(d)["loss_fn_inputs"]["target_tokens"].__setitem__("dtype", "bfloat16")),
            "application/json",
            "forward_backward_input.data[0].loss_fn_inputs.target_tokens.dtype",
            "not float32 or int64",
        ),
        (
            _json(lambda d: _fi(d)["loss_fn_inputs"].__setitem__("weights", [1, 2])),
            "application/json",
            "forward_backward_input.data[0].loss_fn_inputs.weights",
            "TensorData object",
        ),
        (
            _json(
                lambda d: _fi(d)["loss_fn_inputs"]["target_tokens"].__setitem__("sparse_crow_indices", [0, 3])
            ),
            "application/json",
            "forward_backward_input.data[0].loss_fn_inputs.target_tokens.sparse_col_indices",
            "both CSR index lists",
        ),
        (  # row pointers whose differences wrap around int64: once a segfault in np.repeat
            _proto(
                lambda m: setattr(
                    m.data[1].loss_fn_inputs["weights"].sparse_csr,
                    "crow_indices",
                    np.array([0, 2**62, -(2**63) + 5, 3], "<i8").tobytes(),
                )
            ),
            PROTO_CONTENT_TYPE,
            "data[1].loss_fn_inputs.weights.sparse_crow_indices",
            "row pointers",
        ),
        (
            _proto(lambda m: m.data[0].loss_fn_inputs["weights"].shape.extend([1] * 70)),
            PROTO_CONTENT_TYPE,
            "data[0].loss_fn_inputs.weights.shape",
            "71 dimensions; at most 8",
        ),
        (
            _json(lambda d: _fi(d)["loss_fn_inputs"]["target_tokens"].__setitem__("dtype", ["int64"])),
            "application/json",
            "forward_backward_input.data[0].loss_fn_inputs.target_tokens.dtype",
            "not float32 or int64",
        ),
        (
            _json(
                lambda d: _fi(d)["loss_fn_inputs"].__setitem__(
                    "weights", {"data": [1e300], "dtype": "float32"}
                )
            ),
            "application/json",
            "forward_backward_input.data[0].loss_fn_inputs.weights.data",
            "does not fit float32",
        ),
        (
            _json(lambda d: _fi(d)["loss_fn_inputs"]["target_tokens"]["data"].__setitem__(0, 2**64)),
            "application/json",
            "forward_backward_input.data[0].loss_fn_inputs.target_tokens.data",
            "does not fit int64",
        ),
        (
            _json(lambda d: d["forward_backward_input"].pop("data")),
            "application/json",
            "forward_backward_input.data",
            "must be a list, got missing",
        ),
        (
            _json(lambda d: d["forward_backward_input"].__setitem__("loss_fn_config", {"beta": [1]})),
            "application/json",
            "forward_backward_input.loss_fn_config.beta",
            "number or a string",
        ),
        (_json(lambda d: d.__setitem__("seq_id", -1)), "application/json", "seq_id", "non-negative"),
        (
            _json(lambda d: d.__setitem__("forward_only", "yes")),
            "application/json",
            "forward_only",
            "true or false",
        ),
        (_json(lambda d: d.pop("model_id")), "application/json", "model_id", "non-empty"),
        (b'{"x": NaN}', "application/json", None, "not valid JSON"),
    ],
)
def test_hostile_bodies(body, content_type, field, match):
    _raises(body, content_type, field, match)


def test_hostile_encodings():
    ok = _sdk_body(_request())
    _raises(ok, PROTO_CONTENT_TYPE, "Content-Encoding", "unsupported content encoding", encoding="gzip")
    _raises(b"not zstd at all", PROTO_CONTENT_TYPE, "Content-Encoding", "not valid zstd", encoding="zstd")
    truncated = zstd.ZstdCompressor().compress(ok)[:-5]
    with pytest.raises(WireError):
        decode_forward_backward(truncated, PROTO_CONTENT_TYPE, "zstd")
    # a zstd bomb: 64 MiB of zeros compress to a few KiB; refused while inflating, past the cap
    bomb = zstd.ZstdCompressor(level=3).compress(b"\x00" * (64 * 2**20))
    assert len(bomb) < 64 * 2**10
    _raises(
        bomb,
        PROTO_CONTENT_TYPE,
        "Content-Encoding",
        "decompresses past the 1048576-byte limit",
        encoding="zstd",
        max_bytes=2**20,
    )
    # the same frame without its declared size (a streamed writer) is capped as well
    streamed = zstd.ZstdCompressor(write_content_size=False).compress(b"\x00" * (4 * 2**20))
    _raises(streamed, PROTO_CONTENT_TYPE, "Content-Encoding", "past the", encoding="zstd", max_bytes=2**20)
    _raises(ok, PROTO_CONTENT_TYPE, None, "over the 16-byte limit", max_bytes=16)
    # a sparse tensor whose dense form would be huge is refused before it is allocated
    msg = forward_backward_request_to_proto(_request())
    w = msg.data[1].loss_fn_inputs["weights"]
    del w.shape[:]
    w.shape.extend([3, 10**9])
    _raises(
        msg.SerializeToString(),
        PROTO_CONTENT_TYPE,
        "data[1].loss_fn_inputs.weights.shape",
        "too large to densify",
    )


def test_random_bytes_never_escape_as_anything_but_wire_error():
    rng = np.random.default_rng(0)
    ok = _sdk_body(_request())
    for i in range(2000):
        if i % 4:  # flip bytes of a real body: mostly still parseable protobuf with broken fields
            body = bytearray(ok)
            for pos in rng.integers(0, len(body), size=int(rng.integers(1, 6))):
                body[pos] = int(rng.integers(0, 256))
            body = bytes(body)
        else:
            body = rng.integers(0, 256, size=int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
        for content_type in (PROTO_CONTENT_TYPE, "application/json"):
            try:
                decode_forward_backward(body, content_type)
            except WireError:
                pass


def test_json_with_any_field_replaced_never_escapes_as_anything_but_wire_error():
    """Every field of a JSON body (one with a sparse tensor) replaced by values of every JSON type."""
    doc = json.loads(_json(lambda d: None))
    _fi(doc)["loss_fn_inputs"]["weights"] = {
        "data": [1.0, 0.5],
        "dtype": "float32",
        "shape": [2, 3],
        "sparse_crow_indices": [0, 1, 2],
        "sparse_col_indices": [0, 2],
    }
    decode_forward_backward(json.dumps(doc).encode(), "application/json")  # the base is valid

    def paths(node, path=()):
        yield path
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            yield from paths(child, (*path, key))

    values = [
        None,
        True,
        -1,
        0,
        2**40,
        2**70,
        1.5,
        -1e300,
        "x",
        [],
        {},
        [1, "a"],
        [[1]],
        [-1, 2**63],
        {"a": 1},
    ]
    for path in list(paths(doc))[1:]:
        for value in values:
            mutated = json.loads(json.dumps(doc))
            node = mutated
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            try:
                decode_forward_backward(json.dumps(mutated).encode(), "application/json")
            except WireError:
                pass
