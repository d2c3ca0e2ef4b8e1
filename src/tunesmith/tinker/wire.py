"""Wire format of the Tinker SDK's ``forward_backward`` / ``forward`` (``tinker`` 0.38).

Decoding: :func:`decode_forward_backward` turns a request body into a plain
:class:`ForwardBackwardRequest` of :class:`Datum` s. The SDK sends ``forward_backward`` and
``forward`` alike as ``POST /api/v1/forward_backward`` with a protobuf body
(``Content-Type: application/x-protobuf``, ``tinker.proto.tinker_public_pb2.ForwardBackwardRequest``,
``forward_only`` telling the two apart), zstd-compressed (``Content-Encoding: zstd``) when the
server's ``client/config`` sets ``proto_compress_fwdbwd``. The JSON form is the SDK's pydantic
``ForwardBackwardRequest`` dumped in JSON mode (``{"model_id", "seq_id",
"forward_backward_input": {"data", "loss_fn", "loss_fn_config"}}`` plus an optional
``forward_only``), what older SDKs posted to ``/forward_backward`` and ``/forward``. The protobuf
is parsed with the SDK's own generated classes; the schema is not re-declared here.

Encoding: :func:`encode_forward_backward_output` writes the result the SDK's
``retrieve_future`` reads for a ``ForwardBackwardOutput``, :func:`encode_sample_response` the one
for a ``SampleResponse`` (``sample`` / ``compute_logprobs``): the SDK (0.38) asks for
``Accept: application/x-protobuf`` for both types, so only the protobuf form
(:data:`PROTO_CONTENT_TYPE`) is written.

Every defect of a body (garbage bytes, an unknown content type or encoding, a decompressed size
past ``max_bytes``, token ids that are not non-negative integers, a tensor whose shape disagrees
with its data, an image or audio chunk) raises :class:`WireError` naming the field in dotted
form (``data[2].loss_fn_inputs.weights.shape``); nothing else escapes. What the fields mean
(is the loss known, are the ids inside the vocabulary, do the lengths agree) is for the layer
that runs the request. Provenance spans (``model_input_spans``) are accepted and dropped: no
server-side feature of tunesmith reads them.

``tinker`` (and ``zstandard``, which it depends on) is imported inside the functions only, so
that this module imports without it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import TunesmithError
from ..jsontext import loads as json_loads

if TYPE_CHECKING:
    from .sampler import SampleResult

PROTO_CONTENT_TYPE = "application/x-protobuf"
JSON_CONTENT_TYPE = "application/json"
MAX_BODY_BYTES = 256 * 2**20
"""Default cap on a (decompressed) body and on any tensor densified from it: a batch of
64 datums of 32 k tokens with four float32 inputs each is ~34 MiB, so this is generous; a zstd
frame that inflates past it is refused while decompressing, never held whole in memory."""

_NUMPY = {  # proto DType value name -> (numpy dtype of the bytes, torch dtype handed on)
    "DTYPE_FLOAT32": (np.dtype("<f4"), torch.float32),
    "DTYPE_INT64": (np.dtype("<i8"), torch.int64),
    "DTYPE_INT32": (np.dtype("<i4"), torch.int64),
    "DTYPE_BFLOAT16": (np.dtype("<u2"), torch.float32),
}
_JSON_DTYPES = {"float32": torch.float32, "int64": torch.int64}
_MAX_NDIM = 8  # loss inputs are (N,) or (N, K); numpy refuses past 64 dimensions anyway


class WireError(TunesmithError):
    """A request body that cannot be decoded; ``field`` is the offending field (dotted), or None
    for the body as a whole. The message names the field."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.bare_message = field, message


@dataclass(frozen=True)
class Datum:
    """One training example: the model input's tokens (its chunks concatenated, their lengths
    in ``chunk_lengths``) and the loss inputs by name (``target_tokens`` int64, ``weights`` /
    ``advantages`` / ``logprobs`` float32, …), dense, in the shape the client sent."""

    tokens: list[int]
    loss_fn_inputs: dict[str, torch.Tensor]
    chunk_lengths: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ForwardBackwardRequest:
    """A decoded ``forward_backward`` (or, with ``forward_only``, ``forward``) request.

    ``seq_id`` is the client's per-model sequence number (the SDK sends ``request_id + 1``; 0 if
    unset); ``loss_fn_config`` holds numbers as floats and strings as str."""

    model_id: str
    seq_id: int
    loss_fn: str
    loss_fn_config: dict[str, float | str]
    data: list[Datum]
    forward_only: bool = False


def decode_forward_backward(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None = None,
    *,
    max_bytes: int = MAX_BODY_BYTES,
) -> ForwardBackwardRequest:
    """The request in ``body`` as sent with these ``Content-Type`` / ``Content-Encoding`` headers;
    :class:`WireError` if anything about it is wrong."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in (PROTO_CONTENT_TYPE, JSON_CONTENT_TYPE):
        raise WireError(
            f"unsupported content type {content_type!r}: send {PROTO_CONTENT_TYPE} or {JSON_CONTENT_TYPE}",
            "Content-Type",
        )
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise WireError(f"the body must be bytes, not {type(body).__name__}")
    body = _decompress(bytes(body), content_encoding, max_bytes)
    if media == PROTO_CONTENT_TYPE:
        return _from_proto(body, max_bytes)
    return _from_json(body, max_bytes)


def encode_forward_backward_output(
    loss_fn_outputs: list[dict[str, Any]],
    metrics: dict[str, float],
    *,
    loss_fn_output_type: str = "ArrayRecord",
) -> bytes:
    """A ``ForwardBackwardOutput`` protobuf (send as :data:`PROTO_CONTENT_TYPE`) that the SDK
    parses into ``loss_fn_outputs[i][name]`` TensorData (``logprobs``: float32, the shape of the
    datum's ``target_tokens``) and ``metrics`` (``{"loss:sum": …}``).

    Each output is a dict of tensors (torch, numpy or lists), the same keys for every datum.
    The SDK reads each field of a record as one batched buffer with one trailing shape, so runs
    of datums whose fields agree in dtype and trailing shape share a record, and a new record
    starts where they differ (a ragged top-K, say). Outputs with differing keys or non-numeric
    values raise ValueError: they are the server's bug, not the client's."""
    from tinker.proto import tinker_public_pb2 as pb

    arrays = [
        {k: _output_array(v, f"loss_fn_outputs[{i}].{k}") for k, v in out.items()}
        for i, out in enumerate(loss_fn_outputs)
    ]
    msg = pb.ForwardBackwardOutput(loss_fn_output_type=loss_fn_output_type)
    for name, value in metrics.items():
        msg.metrics[str(name)] = float(value)
    keys = set(arrays[0]) if arrays else set()
    for i, out in enumerate(arrays):
        if set(out) != keys:
            raise ValueError(f"loss_fn_outputs[{i}] has keys {sorted(out)}, datum 0 has {sorted(keys)}")
    groups: list[list[dict[str, np.ndarray]]] = []
    for out in arrays:
        sig = {k: (a.dtype, a.shape[1:]) for k, a in out.items()}
        if groups and {k: (a.dtype, a.shape[1:]) for k, a in groups[-1][0].items()} == sig:
            groups[-1].append(out)
        else:
            groups.append([out])
    for group in groups:
        record = msg.loss_fn_outputs.add(type_tag=loss_fn_output_type, num_datums=len(group))
        for key in sorted(keys):
            parts = [out[key] for out in group]
            offsets = np.cumsum([0] + [p.nbytes for p in parts], dtype=np.int64)
            bt = record.fields[key]
            bt.data = b"".join(p.tobytes() for p in parts)
            bt.offsets = offsets.astype("<i8").tobytes()
            bt.dtype = pb.DTYPE_FLOAT32 if parts[0].dtype == np.float32 else pb.DTYPE_INT64
            bt.trailing_shape.extend(parts[0].shape[1:])
    return msg.SerializeToString()


def encode_sample_response(result: SampleResult) -> bytes:
    """A ``SampleResponse`` protobuf (send as :data:`PROTO_CONTENT_TYPE`) of a
    :class:`~tunesmith.tinker.sampler.SampleResult`, as the SDK's ``deserialize_sample_response``
    reads it: per sequence its stop reason (the proto enum), tokens as int32 bytes, log-probs as
    float32 bytes and, when the sampler computed them, top-k as a ``TopkLogprobs`` (row-major
    ``[n, k]`` int32 ids and float32 log-probs, empty cells id 0 / -99999.0); the prompt's
    log-probs as float32 bytes with NaN where not scored (the SDK reads NaN as None) and its top-k
    the same way. Absent optional fields mean "not requested".

    Sequence ids are not in the response: the SDK stamps them from the ``sample_sequence_ids``
    of the future the ``asample`` route answered with (one per requested sample, asserted equal
    in number to the sequences here). A result the sampler could not have made (an unknown stop
    reason, log-probs and tokens of different lengths, ragged top-k rows, ids outside int32)
    raises ValueError: the server's bug, not the client's."""
    from tinker.proto import tinker_public_pb2 as pb

    reasons = {"stop": pb.STOP_REASON_STOP, "length": pb.STOP_REASON_LENGTH}
    msg = pb.SampleResponse()
    for i, seq in enumerate(result.sequences):
        where = f"sequences[{i}]"
        if seq.stop_reason not in reasons:
            raise ValueError(f"{where}.stop_reason: {seq.stop_reason!r} is not 'stop' or 'length'")
        if len(seq.logprobs) != len(seq.tokens):
            raise ValueError(f"{where}: {len(seq.logprobs)} log-probs for {len(seq.tokens)} tokens")
        out = msg.sequences.add(
            stop_reason=reasons[seq.stop_reason],
            tokens=_int32_bytes(seq.tokens, f"{where}.tokens"),
            logprobs=np.asarray(seq.logprobs, dtype="<f4").tobytes(),
        )
        if seq.topk is not None:
            out.topk_sampled_logprobs.CopyFrom(_topk_proto(pb, seq.topk, len(seq.tokens), f"{where}.topk"))
    if result.prompt_logprobs is not None:
        msg.prompt_logprobs = np.asarray(result.prompt_logprobs, dtype="<f4").tobytes()
    if result.topk_prompt is not None:
        rows = len(result.topk_prompt[0])
        msg.topk_prompt_logprobs.CopyFrom(_topk_proto(pb, result.topk_prompt, rows, "topk_prompt"))
    return msg.SerializeToString()


def _int32_bytes(values, where: str) -> bytes:
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    if arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
        raise ValueError(f"{where}: a token id does not fit int32")
    return arr.astype("<i4").tobytes()


def _topk_proto(pb, topk, rows: int, where: str):
    """``TopkLogprobs`` of (ids ``[rows][k]``, log-probs ``[rows][k]``); k from the first row
    (0 with no rows: the SDK reads an empty matrix as None either way)."""
    ids, lps = topk
    k = len(ids[0]) if len(ids) else 0
    if len(ids) != rows or len(lps) != rows:
        raise ValueError(f"{where}: {len(ids)} id rows and {len(lps)} log-prob rows for {rows} positions")
    if any(len(r) != k for r in ids) or any(len(r) != k for r in lps):
        raise ValueError(f"{where}: top-k rows are not all {k} wide")
    return pb.TopkLogprobs(
        token_ids=_int32_bytes(ids, f"{where}.ids") if rows and k else b"",
        logprobs=np.asarray(lps, dtype="<f4").tobytes() if rows and k else b"",
        k=k,
        length=rows,
    )


def _output_array(value: Any, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu")
        value = value.float() if value.is_floating_point() else value.long()
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        arr = arr.astype("<f4")
    elif arr.dtype.kind in "iub":
        arr = arr.astype("<i8")
    else:
        raise ValueError(f"{where}: not a numeric tensor ({arr.dtype})")
    if arr.ndim == 0:
        raise ValueError(f"{where}: a scalar; per-datum outputs are per-token tensors")
    return np.ascontiguousarray(arr)


# ---- decompression -------------------------------------------------------------------------


def _decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        if len(body) > max_bytes:
            raise WireError(f"the body is {len(body)} bytes, over the {max_bytes}-byte limit")
        return body
    if enc != "zstd":
        raise WireError(f"unsupported content encoding {encoding!r}: send zstd or none", "Content-Encoding")
    try:
        import zstandard
    except ImportError:
        raise WireError("zstd bodies need the zstandard package on the server", "Content-Encoding") from None
    # Stream with a cap instead of decompress(): a frame's declared size may lie or be absent,
    # and a small bomb must not be inflated whole before it is measured.
    out = bytearray()
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True) as reader:
            while True:
                piece = reader.read(min(1 << 20, max_bytes + 1 - len(out)))
                if not piece:
                    break
                out += piece
                if len(out) > max_bytes:
                    raise WireError(
                        f"the body decompresses past the {max_bytes}-byte limit", "Content-Encoding"
                    )
    except zstandard.ZstdError as exc:
        raise WireError(f"the body is not valid zstd ({exc})", "Content-Encoding") from None
    return bytes(out)


# ---- protobuf ------------------------------------------------------------------------------


def _from_proto(body: bytes, max_bytes: int) -> ForwardBackwardRequest:
    try:
        from tinker.proto import tinker_public_pb2 as pb
    except ImportError:
        raise WireError("protobuf bodies need the tinker package on the server", "Content-Type") from None
    from google.protobuf.message import DecodeError

    msg = pb.ForwardBackwardRequest()
    try:
        msg.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as exc:  # upb raises DecodeError; be broad
        raise WireError(f"the body is not a ForwardBackwardRequest protobuf ({exc})") from None
    if msg.loss_fn_config_v2:
        config: dict[str, float | str] = {}
        for key, value in msg.loss_fn_config_v2.items():
            arm = value.WhichOneof("value")
            if arm is None:
                raise WireError("neither a number nor a text", f"loss_fn_config.{key}")
            config[key] = value.number if arm == "number" else value.text
    else:
        config = {key: float(value) for key, value in msg.loss_fn_config.items()}
    data = []
    for i, datum in enumerate(msg.data):
        where = f"data[{i}]"
        tokens: list[int] = []
        lengths = []
        for j, chunk in enumerate(datum.model_input):
            arm = chunk.WhichOneof("chunk")
            if arm != "encoded_text":
                what = {"image": "image", "dmel": "audio (dmel)", None: "empty"}.get(arm, str(arm))
                raise WireError(
                    f"{what} chunks are not supported; only encoded_text", f"{where}.model_input.chunks[{j}]"
                )
            raw = chunk.encoded_text.tokens
            if len(raw) % 4:
                raise WireError(
                    f"{len(raw)} bytes is not a whole number of int32 token ids",
                    f"{where}.model_input.chunks[{j}].tokens",
                )
            ids = np.frombuffer(raw, dtype="<i4")
            if ids.size and int(ids.min()) < 0:
                raise WireError("a token id is negative", f"{where}.model_input.chunks[{j}].tokens")
            tokens += ids.tolist()
            lengths.append(int(ids.size))
        inputs = {
            key: _proto_tensor(t, pb, f"{where}.loss_fn_inputs.{key}", max_bytes)
            for key, t in datum.loss_fn_inputs.items()
        }
        data.append(Datum(tokens=tokens, loss_fn_inputs=inputs, chunk_lengths=lengths))
    return _request(msg.model_id, msg.seq_id, msg.loss_fn, config, data, msg.forward_only)


def _proto_tensor(t, pb, where: str, max_bytes: int) -> torch.Tensor:
    name = pb.DType.Name(t.dtype) if t.dtype in pb.DType.values() else None
    if name not in _NUMPY:
        raise WireError(f"unsupported dtype {name or t.dtype}", f"{where}.dtype")
    np_dtype, torch_dtype = _NUMPY[name]
    shape = list(t.shape)
    if t.WhichOneof("encoding") == "sparse_csr":
        csr = t.sparse_csr
        values = _buffer(csr.values, np_dtype, f"{where}.sparse_csr.values")
        crow = _buffer(csr.crow_indices, np.dtype("<i8"), f"{where}.sparse_csr.crow_indices")
        col = _buffer(csr.col_indices, np.dtype("<i8"), f"{where}.sparse_csr.col_indices")
        arr = _densify(values, crow, col, shape, where, max_bytes)
    else:
        arr = _buffer(t.dense, np_dtype, f"{where}.dense")
        arr = _reshape(arr, shape, where)
    if name == "DTYPE_BFLOAT16":  # the upper 16 bits of a float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="), copy=True)).to(torch_dtype)


def _buffer(raw: bytes, dtype: np.dtype, where: str) -> np.ndarray:
    if len(raw) % dtype.itemsize:
        raise WireError(f"{len(raw)} bytes is not a whole number of {dtype.itemsize}-byte elements", where)
    return np.frombuffer(raw, dtype=dtype)


def _reshape(arr: np.ndarray, shape: list[int], where: str) -> np.ndarray:
    if not shape:  # shape is optional on the wire: a flat list
        return arr
    if len(shape) > _MAX_NDIM:
        raise WireError(f"{len(shape)} dimensions; at most {_MAX_NDIM}", f"{where}.shape")
    if any(s < 0 for s in shape):
        raise WireError(f"negative dimension in {shape}", f"{where}.shape")
    if math.prod(shape) != arr.size:
        raise WireError(
            f"shape {shape} holds {math.prod(shape)} elements but the data has {arr.size}", f"{where}.shape"
        )
    return arr.reshape(shape)


def _densify(values, crow, col, shape: list[int], where: str, max_bytes: int) -> np.ndarray:
    """A sparse CSR tensor as a dense array, unlisted entries 0 (the SDK's default pad)."""
    if len(shape) != 2 or any(s < 0 for s in shape):
        raise WireError(f"a sparse tensor needs a 2-D shape, got {shape}", f"{where}.shape")
    rows, cols = shape
    if rows * cols * values.dtype.itemsize > max_bytes:
        raise WireError(f"shape {shape} is too large to densify (limit {max_bytes} bytes)", f"{where}.shape")
    nnz = values.size
    # The range check comes first: np.diff of arbitrary int64s can wrap around and pass.
    if crow.size != rows + 1 or crow[0] != 0 or crow[-1] != nnz or crow.min() < 0 or crow.max() > nnz:
        raise WireError(f"not {rows + 1} row pointers from 0 to {nnz}", f"{where}.sparse_crow_indices")
    if np.any(np.diff(crow) < 0):
        raise WireError(
            f"not {rows + 1} non-decreasing row pointers from 0 to {nnz}", f"{where}.sparse_crow_indices"
        )
    if col.size != nnz:
        raise WireError(f"{col.size} column indices for {nnz} values", f"{where}.sparse_col_indices")
    if nnz and (col.min() < 0 or col.max() >= cols):
        raise WireError(f"a column index is outside [0, {cols})", f"{where}.sparse_col_indices")
    dense = np.zeros((rows, cols), dtype=values.dtype)
    dense[np.repeat(np.arange(rows), np.diff(crow)), col] = values
    return dense


# ---- JSON ----------------------------------------------------------------------------------


def _from_json(body: bytes, max_bytes: int) -> ForwardBackwardRequest:
    try:
        doc = json_loads(body, allow_nan=False)
    except UnicodeDecodeError:
        raise WireError("the body is not UTF-8") from None
    except ValueError as exc:  # JSONDecodeError and jsontext.BadJSON
        raise WireError(f"the body is not valid JSON ({getattr(exc, 'msg', exc)})") from None
    _need(doc, dict, "a JSON object", None)
    inp = _need(doc.get("forward_backward_input"), dict, "an object", "forward_backward_input")
    config = inp.get("loss_fn_config")
    config = {} if config is None else config
    _need(config, dict, "an object", "forward_backward_input.loss_fn_config")
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise WireError("must be a number or a string", f"forward_backward_input.loss_fn_config.{key}")
    config = {k: v if isinstance(v, str) else float(v) for k, v in config.items()}
    data = []
    for i, datum in enumerate(_need(inp.get("data"), list, "a list", "forward_backward_input.data")):
        where = f"forward_backward_input.data[{i}]"
        _need(datum, dict, "an object", where)
        chunks = _need(
            _need(datum.get("model_input"), dict, "an object", f"{where}.model_input").get("chunks"),
            list,
            "a list",
            f"{where}.model_input.chunks",
        )
        tokens: list[int] = []
        lengths = []
        for j, chunk in enumerate(chunks):
            cw = f"{where}.model_input.chunks[{j}]"
            _need(chunk, dict, "an object", cw)
            if chunk.get("type", "encoded_text") != "encoded_text":
                raise WireError(
                    f"{chunk.get('type')!r} chunks are not supported; only encoded_text", f"{cw}.type"
                )
            ids = _need(chunk.get("tokens"), list, "a list", f"{cw}.tokens")
            for k, tok in enumerate(ids):
                if isinstance(tok, bool) or not isinstance(tok, int) or not 0 <= tok < 2**31:
                    raise WireError(f"{tok!r} is not a token id (a non-negative int32)", f"{cw}.tokens[{k}]")
            tokens += ids
            lengths.append(len(ids))
        raw_inputs = _need(datum.get("loss_fn_inputs", {}), dict, "an object", f"{where}.loss_fn_inputs")
        inputs = {
            key: _json_tensor(t, f"{where}.loss_fn_inputs.{key}", max_bytes) for key, t in raw_inputs.items()
        }
        data.append(Datum(tokens=tokens, loss_fn_inputs=inputs, chunk_lengths=lengths))
    seq_id = doc.get("seq_id")
    seq_id = 0 if seq_id is None else seq_id
    forward_only = doc.get("forward_only", False)
    if not isinstance(forward_only, bool):
        raise WireError("must be true or false", "forward_only")
    return _request(
        doc.get("model_id"),
        seq_id,
        inp.get("loss_fn"),
        config,
        data,
        forward_only,
        prefix="forward_backward_input.",
    )


def _json_tensor(t: Any, where: str, max_bytes: int) -> torch.Tensor:
    _need(t, dict, "a TensorData object ({data, dtype, shape})", where)
    dtype = t.get("dtype")
    if not isinstance(dtype, str) or dtype not in _JSON_DTYPES:
        raise WireError(f"{dtype!r} is not float32 or int64", f"{where}.dtype")
    values = _need(t.get("data"), list, "a flat list of numbers", f"{where}.data")
    for k, v in enumerate(values):
        ok = isinstance(v, int) if dtype == "int64" else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            raise WireError(
                f"{v!r} is not {'an integer' if dtype == 'int64' else 'a number'}", f"{where}.data[{k}]"
            )
    try:
        with np.errstate(over="ignore"):
            arr = np.asarray(values, dtype=np.int64 if dtype == "int64" else np.float32)
    except OverflowError:
        raise WireError(f"a value does not fit {dtype}", f"{where}.data") from None
    if arr.dtype == np.float32 and not np.isfinite(arr).all():  # JSON has no inf: an overflow
        raise WireError("a value does not fit float32", f"{where}.data")
    shape = t.get("shape")
    shape = [] if shape is None else _need(shape, list, "a list of dimensions", f"{where}.shape")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in shape):
        raise WireError(f"{shape} is not a list of integers", f"{where}.shape")
    crow, col = t.get("sparse_crow_indices"), t.get("sparse_col_indices")
    if crow is None and col is None:
        arr = _reshape(arr, shape, where)
    else:
        idx = []
        for name, v in (("sparse_crow_indices", crow), ("sparse_col_indices", col)):
            _need(v, list, "a list of integers (both CSR index lists or neither)", f"{where}.{name}")
            if any(isinstance(x, bool) or not isinstance(x, int) or abs(x) >= 2**63 for x in v):
                raise WireError("not a list of integers", f"{where}.{name}")
            idx.append(np.asarray(v, dtype=np.int64))
        arr = _densify(arr, idx[0], idx[1], shape, where, max_bytes)
    return torch.from_numpy(np.array(arr, copy=True))


# ---- shared --------------------------------------------------------------------------------


def _need(value: Any, kind: type, what: str, where: str | None) -> Any:
    if not isinstance(value, kind):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise WireError(f"must be {what}, got {got}", where)
    return value


def _request(
    model_id, seq_id, loss_fn, config, data, forward_only, prefix: str = ""
) -> ForwardBackwardRequest:
    if not isinstance(model_id, str) or not model_id:
        raise WireError("must be a non-empty string", "model_id")
    if isinstance(seq_id, bool) or not isinstance(seq_id, int) or seq_id < 0:
        raise WireError("must be a non-negative integer", "seq_id")
    if not isinstance(loss_fn, str) or not loss_fn:
        raise WireError("must be a non-empty string", f"{prefix}loss_fn")
    return ForwardBackwardRequest(
        model_id=model_id,
        seq_id=seq_id,
        loss_fn=loss_fn,
        loss_fn_config=config,
        data=data,
        forward_only=forward_only,
    )
