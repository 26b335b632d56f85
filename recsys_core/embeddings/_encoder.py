"""The transformer text encoder: mean pooling over the attention mask, L2-normalised, float32.

Loaded from a local folder with ``local_files_only=True`` (never downloads). Texts are sorted by
token length before batching, so each batch pads to a length close to its members' own (and
batches of long texts hold fewer of them, see :func:`_batches`), and run
under :func:`torch.inference_mode` with the configured thread count. Texts longer than
``max_length`` tokens are truncated and counted; empty texts get a zero vector and are counted.
The model itself is loaded on the first :meth:`TextEncoder.encode`, so ``model_id`` and ``dim``
are cheap.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from recsys_core.config import EmbeddingConfig
from recsys_core.embeddings._model import ModelFiles, resolve_model
from recsys_core.embeddings._progress import LogSink, ProgressArg, ProgressReporter

__all__ = ["EncodeStats", "Encoder", "TextEncoder", "get_encoder"]


@dataclass(frozen=True)
class EncodeStats:
    """What the last :meth:`encode` call did.

    ``n_texts``: texts given. ``n_empty``: empty texts (zero vectors, not run through the model).
    ``n_truncated``: texts longer than ``max_length`` tokens (cut to it). ``n_tokens``: real tokens
    fed to the model, including special tokens. ``n_padded``: padding tokens added to batches.
    """

    n_texts: int = 0
    n_empty: int = 0
    n_truncated: int = 0
    n_tokens: int = 0
    n_padded: int = 0
    seconds: float = 0.0


@runtime_checkable
class Encoder(Protocol):
    """What :func:`~recsys_core.embeddings.embed_catalog` needs from an encoder."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def max_length(self) -> int: ...

    last_stats: EncodeStats

    def encode(
        self,
        texts: list[str],
        batch_size: int | None = None,
        progress: ProgressArg = False,
        log: LogSink = None,
    ) -> np.ndarray: ...


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads (0: leave torch's setting), restoring the previous count."""
    import torch

    before = torch.get_num_threads()
    if n > 0 and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class TextEncoder:
    """A local Hugging Face encoder producing unit-length float32 sentence vectors.

    ``max_length`` is capped at the model's position limit. ``quantize`` swaps every linear layer
    for a dynamically quantised int8 one (see :mod:`recsys_core.embeddings._quantize`).
    """

    def __init__(
        self,
        files: ModelFiles,
        *,
        max_length: int = 256,
        quantize: bool = False,
        threads: int = 0,
        batch_size: int = 64,
    ) -> None:
        self.files = files
        self._max_length = min(int(max_length), files.max_positions)
        self.quantize = quantize
        self.threads = threads
        self.batch_size = batch_size
        self.last_stats = EncodeStats()
        self._tokenizer: Any = None
        self._model: Any = None
        self._lock = threading.Lock()  # one encode at a time: shared by Prefect's task threads

    @property
    def model_id(self) -> str:
        return self.files.model_id(max_length=self._max_length, quantize=self.quantize)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def dim(self) -> int:
        if self.files.dim is not None:
            return self.files.dim
        return int(self._load()[1].config.hidden_size)

    def __repr__(self) -> str:
        return f"TextEncoder({self.model_id!r}, path={str(self.files.path)!r})"

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            path = str(self.files.path)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
            model.eval()
            if self.quantize:
                from recsys_core.embeddings._quantize import quantize_linear_int8

                model = quantize_linear_int8(model)
            self._tokenizer, self._model = tokenizer, model
        return self._tokenizer, self._model

    def encode(
        self,
        texts: list[str],
        batch_size: int | None = None,
        progress: ProgressArg = False,
        log: LogSink = None,
    ) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit vectors, rows in the order of ``texts``.

        Empty (or whitespace-only, or non-string) entries give zero rows and are counted in
        :attr:`last_stats`, with the number of texts truncated at :attr:`max_length` tokens.
        """
        with self._lock:
            return self._encode(texts, batch_size or self.batch_size, progress, log)

    def _encode(
        self, texts: list[str], batch_size: int, progress: ProgressArg, log: LogSink
    ) -> np.ndarray:
        import torch

        start = time.perf_counter()
        tokenizer, model = self._load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        live = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        live_texts = [texts[i] for i in live]
        live_rows = np.asarray(live, dtype=np.int64)
        n_trunc = n_tokens = n_padded = 0
        with _torch_threads(self.threads):
            if live_texts:
                # one token past the limit tells which texts the limit cuts
                ids = tokenizer(
                    live_texts,
                    truncation=True,
                    max_length=self._max_length + 1,
                    return_attention_mask=False,
                    return_token_type_ids=False,
                )["input_ids"]
                lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
                n_trunc = int((lengths > self._max_length).sum())
                lengths = np.minimum(lengths, self._max_length)
                n_tokens = int(lengths.sum())
                order = np.argsort(-lengths, kind="stable")
            else:
                lengths = np.zeros(0, dtype=np.int64)
                order = lengths
            reporter = ProgressReporter(
                len(live_texts), total_work=float(n_tokens), progress=progress, log=log
            )
            with reporter, torch.inference_mode():
                for idx in _batches(order, lengths, batch_size):
                    batch = tokenizer(
                        [live_texts[i] for i in idx],
                        padding=True,
                        truncation=True,
                        max_length=self._max_length,
                        return_tensors="pt",
                    )
                    hidden = model(**batch).last_hidden_state
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                    pooled = torch.nn.functional.normalize(pooled.float(), p=2.0, dim=1)
                    out[live_rows[idx]] = pooled.numpy()
                    n_padded += int(batch["attention_mask"].numel()) - int(lengths[idx].sum())
                    reporter.update(len(idx), float(lengths[idx].sum()))
        self.last_stats = EncodeStats(
            n_texts=len(texts),
            n_empty=len(texts) - len(live),
            n_truncated=n_trunc,
            n_tokens=n_tokens,
            n_padded=n_padded,
            seconds=time.perf_counter() - start,
        )
        return out


def _batches(order: np.ndarray, lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive slices of ``order`` (texts by decreasing token length).

    A batch holds at most ``batch_size`` texts and at most ``batch_size x mean length`` padded
    tokens (or a single text): the few long texts go in smaller batches, so that short texts
    are rarely padded to a long one's length and every batch costs about the same.
    """
    if len(order) == 0:
        return
    budget = batch_size * max(int(lengths.mean()), 1)
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        count = max(1, min(batch_size, budget // longest))
        yield order[start : start + count]
        start += count


def get_encoder(cfg: EmbeddingConfig) -> TextEncoder:
    """The process-wide shared encoder for ``cfg`` (one per model path, quantize, threads, length).

    The nightly pipeline calls this every run; the model is loaded and hashed once per process.
    The batch size is not part of the key: pass ``cfg.batch_size`` to :meth:`TextEncoder.encode`.
    ``get_encoder.cache_clear()`` drops them.
    """
    path = None if cfg.model_path is None else str(Path(cfg.model_path).expanduser().resolve())
    return _cached_encoder(path, cfg.quantize, cfg.threads, cfg.max_length)


@functools.lru_cache(maxsize=4)
def _cached_encoder(path: str | None, quantize: bool, threads: int, max_length: int) -> TextEncoder:
    return TextEncoder(
        resolve_model(path), max_length=max_length, quantize=quantize, threads=threads
    )


get_encoder.cache_clear = _cached_encoder.cache_clear  # type: ignore[attr-defined]
