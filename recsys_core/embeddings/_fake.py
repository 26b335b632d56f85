"""A tiny deterministic encoder with the :class:`~recsys_core.embeddings.Encoder` protocol.

Each lower-cased word is hashed (blake2b) to a seed of a fixed Gaussian vector; a text's vector is
the L2-normalised sum of its first ``max_length`` words' vectors. Texts sharing words are close;
the same text always gives the same vector, in any process. For plumbing tests: no torch, no model.
"""

from __future__ import annotations

import hashlib
import re
import time

import numpy as np

from recsys_core.embeddings._encoder import EncodeStats
from recsys_core.embeddings._progress import LogSink, ProgressArg, ProgressReporter

__all__ = ["FakeEncoder"]

_WORD_RE = re.compile(r"\w+", re.UNICODE)


class FakeEncoder:
    """Hashing bag-of-words encoder. ``fail_on``: raise RuntimeError when a text contains it.

    ``calls`` records the texts of every :meth:`encode` call, for tests to count.
    """

    def __init__(
        self,
        dim: int = 16,
        *,
        max_length: int = 64,
        name: str = "fake-hash",
        fail_on: str | None = None,
    ) -> None:
        self._dim = dim
        self._max_length = max_length
        self._name = name
        self.fail_on = fail_on
        self.calls: list[list[str]] = []
        self.last_stats = EncodeStats()

    @property
    def model_id(self) -> str:
        return f"{self._name}@d{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_length(self) -> int:
        return self._max_length

    def _word_vector(self, word: str) -> np.ndarray:
        seed = int.from_bytes(
            hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little"
        )
        return np.random.default_rng(seed).standard_normal(self._dim)

    def encode(
        self,
        texts: list[str],
        batch_size: int | None = None,
        progress: ProgressArg = False,
        log: LogSink = None,
    ) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit vectors; empty texts give zero rows."""
        start = time.perf_counter()
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        n_empty = n_trunc = n_tokens = 0
        batch_size = batch_size or 64
        with ProgressReporter(len(texts), progress=progress, log=log) as reporter:
            for s in range(0, len(texts), batch_size):
                chunk = texts[s : s + batch_size]
                for i, text in enumerate(chunk, start=s):
                    if self.fail_on is not None and self.fail_on in text:
                        raise RuntimeError(f"FakeEncoder told to fail on {self.fail_on!r}")
                    words = _WORD_RE.findall(text.lower())
                    if not words:
                        n_empty += 1
                        continue
                    if len(words) > self._max_length:
                        n_trunc += 1
                        words = words[: self._max_length]
                    n_tokens += len(words)
                    v = np.sum([self._word_vector(w) for w in words], axis=0)
                    out[i] = v / max(float(np.linalg.norm(v)), 1e-12)
                reporter.update(len(chunk))
        self.last_stats = EncodeStats(
            n_texts=len(texts),
            n_empty=n_empty,
            n_truncated=n_trunc,
            n_tokens=n_tokens,
            seconds=time.perf_counter() - start,
        )
        return out
