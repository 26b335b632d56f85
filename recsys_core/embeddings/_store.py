"""The item-embedding table: incremental builds, loading, aligned matrices, nearest neighbours.

The table is ``<warehouse>/features/item_embeddings/part-0.parquet``, sorted by ``item_id``, with
columns ``item_id``, ``content_hash``, ``model_id``, ``dim``, ``vector`` (``Array(Float32, dim)``,
unit length) and ``embedded_at`` (UTC). It holds the vectors of one model id.

Incremental rule: a catalog item is re-embedded when the table has no row for it, or its row's
``content_hash`` differs from the hash of its current text, or the row was made by another model
id (so a new model, a new weights file, ``quantize`` or a new ``max_length`` re-embeds
everything). Items whose text is now empty lose their vector. Items absent from the catalog keep
theirs: the catalog passed in is an as-of snapshot and may be partial; old vectors are harmless to
models, which only ask for the items they know.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys_core.config import EmbeddingConfig
from recsys_core.embeddings._encoder import Encoder, get_encoder
from recsys_core.embeddings._progress import LOGGER, LogSink, ProgressArg
from recsys_core.embeddings._text import DataCoercionWarning, build_item_texts
from recsys_core.io import (
    CorruptFileError,
    Warehouse,
    atomic_write_parquet,
    exists,
    location,
    read_parquet,
)

__all__ = [
    "EmbedSummary",
    "UnknownItemError",
    "embed_catalog",
    "embedding_matrix",
    "embeddings_path",
    "load_embeddings",
    "similar_items",
]


class UnknownItemError(KeyError):
    """An item id with no vector in the embedding table."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class EmbedSummary:
    """What :func:`embed_catalog` did.

    ``n_items``: catalog items. ``n_embedded``: items whose vector was computed this run (items
    sharing one text are encoded once). ``n_reused``: vectors kept because text and model are
    unchanged. ``n_empty``: items with empty text (no vector). ``n_truncated``: texts encoded this
    run that were cut at ``max_length`` tokens. ``n_kept_absent``: vectors kept for items not in
    this catalog. ``n_dropped``: old vectors removed (text now empty, or another model's rows).
    ``written``: whether the table file was rewritten (not when nothing changed).
    """

    model_id: str
    n_items: int
    n_embedded: int
    n_reused: int
    n_empty: int
    n_truncated: int
    seconds: float
    path: Path
    n_kept_absent: int = 0
    n_dropped: int = 0
    written: bool = False
    text_stats: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def embeddings_path(store: Any) -> Any:
    """The table file: ``store`` itself if it ends in ``.parquet``, else the warehouse's path."""
    store = location(store)
    return store if store.suffix == ".parquet" else Warehouse(store).item_embeddings


def _schema(dim: int) -> dict[str, pl.DataType]:
    return {
        "item_id": pl.String(),
        "content_hash": pl.String(),
        "model_id": pl.String(),
        "dim": pl.Int32(),
        "vector": pl.Array(pl.Float32, dim),
        "embedded_at": pl.Datetime("us", "UTC"),
    }


def _emit(log: LogSink, line: str) -> None:
    if log is None:
        LOGGER.info(line)
    elif isinstance(log, logging.Logger | logging.LoggerAdapter):
        log.info(line)
    else:
        log(line)


def _read_previous(path: Path, log: LogSink) -> pl.DataFrame | None:
    if not exists(path):
        return None
    try:
        df = read_parquet(path)
    except CorruptFileError as exc:
        problem = str(exc)
    else:
        missing = [c for c in _schema(1) if c not in df.columns]
        if not missing:
            return df
        problem = f"{path}: no column {', '.join(missing)} (columns are {df.columns})"
    warnings.warn(f"{problem}; rebuilding every vector", DataCoercionWarning, stacklevel=3)
    _emit(log, f"previous embedding table unusable, rebuilding: {problem}")
    return None


def embed_catalog(
    catalog: pl.DataFrame,
    store: Path | str,
    config: EmbeddingConfig,
    *,
    encoder: Encoder | None = None,
    progress: ProgressArg = False,
    log: LogSink = None,
    now: dt.datetime | None = None,
) -> EmbedSummary:
    """Bring the embedding table under ``store`` up to date with ``catalog``; return a summary.

    ``catalog`` has ``item_id`` and the template's text columns (``title``, ``description``,
    ``categories``, ``tags``; nulls allowed). ``encoder`` defaults to the shared one of
    ``config`` (:func:`get_encoder`). The table is replaced atomically after every vector has
    been computed, so a failure leaves the previous table intact. ``now`` stamps new rows.
    """
    start = time.perf_counter()
    path = embeddings_path(store)
    texts, text_stats = build_item_texts(catalog, config.template)
    encoder = encoder if encoder is not None else get_encoder(config)
    model_id, dim = encoder.model_id, encoder.dim
    schema = _schema(dim)
    now = now or dt.datetime.now(dt.UTC)

    previous = _read_previous(path, log)
    if previous is None:
        previous = pl.DataFrame(schema=schema)
    same = previous.filter((pl.col("model_id") == model_id) & (pl.col("dim") == dim))
    if same.height and same.schema["vector"] != schema["vector"]:
        same = same.with_columns(pl.col("vector").cast(schema["vector"]))

    live = texts.filter(pl.col("text") != "")
    joined = live.join(
        same.select("item_id", pl.col("content_hash").alias("_old_hash"), "vector", "embedded_at"),
        on="item_id",
        how="left",
        maintain_order="left",
    )
    is_reused = pl.col("_old_hash").is_not_null() & (pl.col("_old_hash") == pl.col("content_hash"))
    reused = joined.filter(is_reused)
    todo = joined.filter(~is_reused)

    unique_texts = todo["text"].unique(maintain_order=True)
    n_truncated = 0
    if unique_texts.len():
        _emit(
            log,
            f"embedding {todo.height} of {texts.height} items ({unique_texts.len()} distinct "
            f"texts) with {model_id}; reusing {reused.height}",
        )
        vectors = encoder.encode(
            unique_texts.to_list(), batch_size=config.batch_size, progress=progress, log=log
        )
        n_truncated = encoder.last_stats.n_truncated
        row_of_text = todo["text"].replace_strict(
            unique_texts, pl.int_range(unique_texts.len(), eager=True), return_dtype=pl.Int64
        )
        new_vectors = pl.Series("vector", vectors[row_of_text.to_numpy()], dtype=schema["vector"])
    else:
        new_vectors = pl.Series("vector", np.zeros((0, dim), np.float32), dtype=schema["vector"])

    fresh = todo.select("item_id", "content_hash").with_columns(
        pl.lit(model_id, pl.String).alias("model_id"),
        pl.lit(dim, pl.Int32).alias("dim"),
        new_vectors,
        pl.lit(now, schema["embedded_at"]).alias("embedded_at"),
    )
    kept_rows = reused.select(
        "item_id",
        "content_hash",
        pl.lit(model_id, pl.String).alias("model_id"),
        pl.lit(dim, pl.Int32).alias("dim"),
        "vector",
        "embedded_at",
    )
    absent = same.join(texts.select("item_id"), on="item_id", how="anti").select(list(schema))
    table = pl.concat([kept_rows, fresh, absent], how="vertical").cast(schema).sort("item_id")

    empty_ids = texts.filter(pl.col("text") == "")["item_id"]
    n_dropped = previous.height - same.height + same["item_id"].is_in(empty_ids.implode()).sum()
    changed = fresh.height > 0 or table.height != previous.height
    if changed:
        atomic_write_parquet(table, path)
    summary = EmbedSummary(
        model_id=model_id,
        n_items=texts.height,
        n_embedded=fresh.height,
        n_reused=reused.height,
        n_empty=text_stats.n_empty,
        n_truncated=n_truncated,
        seconds=time.perf_counter() - start,
        path=path,
        n_kept_absent=absent.height,
        n_dropped=int(n_dropped),
        written=changed,
        text_stats=text_stats.as_dict(),
    )
    _emit(
        log,
        f"item embeddings: {summary.n_embedded} embedded, {summary.n_reused} reused, "
        f"{summary.n_empty} empty, {summary.n_truncated} truncated, {summary.n_kept_absent} kept "
        f"for items not in the catalog, in {summary.seconds:.1f}s -> {path}",
    )
    return summary


def load_embeddings(store: Path | str, model_id: str | None = None) -> pl.DataFrame:
    """The embedding table under ``store``; with ``model_id``, insist the vectors are that model's."""
    path = embeddings_path(store)
    if not exists(path):
        raise FileNotFoundError(
            f"no item embeddings at {path}; run the embedding step (embed_catalog) first"
        )
    df = read_parquet(path)
    models = df["model_id"].unique().sort().to_list()
    if model_id is not None and models and models != [model_id]:
        raise ValueError(
            f"{path} holds vectors of model {', '.join(models)}, expected {model_id}; re-run the "
            "embedding step with that model's configuration"
        )
    if len(models) > 1:
        raise ValueError(f"{path} mixes vectors of models {models}; expected one model id")
    return df


def embedding_matrix(df: pl.DataFrame, item_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix, mask)``: row ``i`` is the vector of ``item_ids[i]``, zeros where there is none.

    ``mask[i]`` is True where a vector was found. ``df`` is a :func:`load_embeddings` frame.
    """
    ids = pl.Series("item_id", list(item_ids), dtype=pl.String)
    dtype = df.schema["vector"]
    if not isinstance(dtype, pl.Array):
        raise TypeError(f"column 'vector' is {dtype}, expected a fixed-size Array of Float32")
    dim = int(dtype.size)
    matrix = np.zeros((ids.len(), dim), dtype=np.float32)
    if df.height == 0 or ids.len() == 0:
        return matrix, np.zeros(ids.len(), dtype=bool)
    rows = ids.replace_strict(
        df["item_id"], pl.int_range(df.height, eager=True), default=None, return_dtype=pl.Int64
    )
    mask = rows.is_not_null().to_numpy()
    vectors = df["vector"].to_numpy()
    matrix[mask] = vectors[rows.drop_nulls().to_numpy()]
    return matrix, mask


def similar_items(
    store: Path | str,
    item_id: str,
    k: int = 10,
    catalog: pl.DataFrame | None = None,
    model_id: str | None = None,
) -> pl.DataFrame:
    """The ``k`` items whose vectors are closest to ``item_id``'s: ``item_id, [title,] cosine``.

    Best first, ties by ``item_id``; the item itself is left out. ``title`` comes from
    ``catalog`` when given. An id with no vector raises :class:`UnknownItemError` (a KeyError).
    """
    path = embeddings_path(store)
    df = load_embeddings(path, model_id)
    hit = df["item_id"].index_of(item_id)
    if hit is None:
        raise UnknownItemError(
            f"item {item_id!r} has no vector in {path} ({df.height} items embedded); ids are "
            "matched exactly as strings, and items with empty text or added since the last "
            "embedding run have none"
        )
    vectors = df["vector"].to_numpy()
    cosine = vectors @ vectors[hit]
    out = (
        df.select("item_id")
        .with_columns(pl.Series("cosine", cosine, dtype=pl.Float32))
        .filter(pl.col("item_id") != item_id)
        .sort(["cosine", "item_id"], descending=[True, False])
        .head(k)
    )
    if catalog is not None:
        titles = catalog.select(
            pl.col("item_id").cast(pl.String), pl.col("title").cast(pl.String)
        ).unique(subset="item_id", keep="last", maintain_order=True)
        out = out.join(titles, on="item_id", how="left", maintain_order="left").select(
            "item_id", "title", "cosine"
        )
    return out
