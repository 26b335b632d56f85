"""Benchmark: our item-text encoder against sentence-transformers, and the incremental rebuild.

    python benchmarks/bench_embeddings.py [--limit N] [--threads T] [--batch-size B] [--json PATH]

Texts: every MovieLens latest-small movie rendered through the default template from its title,
genres, tags (tags.csv) and TMDB overview (where the join file has one), from ``../shared/data``.
On the same texts, with the same model, thread count, batch size and token limit (the
sentence-transformers model's ``max_seq_length``), it measures:

* throughput of ``TextEncoder.encode`` (float32, then the int8 fast mode) against
  ``SentenceTransformer.encode``; targets >= 1.0x (float32) and >= 2.0x (fast mode);
* agreement: cosine of each text's vector with sentence-transformers' (mean >= 0.999 float32,
  >= 0.99 fast mode; the minimum is reported too);
* incremental cost: ``embed_catalog`` from scratch, then again after 1% of the item texts
  changed; target <= 5% of the full run's time.

Each timing is the best of ``--repeats`` runs, interleaved so that a noisy neighbour slows all
contenders alike. The machine's load average is printed: on a shared machine the ratios are
meaningful, the absolute rates much less so. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recsys_core.config import EmbeddingConfig  # noqa: E402
from recsys_core.embeddings import (  # noqa: E402
    TextEncoder,
    build_item_texts,
    embed_catalog,
    embedding_matrix,
    load_embeddings,
    resolve_model,
)
from recsys_core.io import atomic_write_json  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def movielens_catalog(data: Path = DATA, tags_before: int | None = None) -> pl.DataFrame:
    """item_id, title, categories (genres), tags (distinct, first-use order), description.

    ``tags_before``: only tags applied before this Unix time (a temporal split's cutoff).
    """
    movies = pl.read_csv(
        data / "ml-latest-small" / "movies.csv", schema_overrides={"movieId": pl.String}
    )
    tags = pl.read_csv(
        data / "ml-latest-small" / "tags.csv", schema_overrides={"movieId": pl.String}
    )
    if tags_before is not None:
        tags = tags.filter(pl.col("timestamp") < tags_before)
    tags = (
        tags.sort(["movieId", "timestamp", "tag"])
        .unique(subset=["movieId", "tag"], keep="first", maintain_order=True)
        .group_by("movieId", maintain_order=True)
        .agg(pl.col("tag").str.join("|").alias("tags"))
    )
    overviews = pl.read_csv(
        data / "tmdb-5000-movies" / "ml-latest-small_tmdb_overviews.csv",
        schema_overrides={"movieId": pl.String, "imdbId": pl.String, "tmdbId": pl.String},
    ).select("movieId", pl.col("overview").alias("description"))
    return (
        movies.join(tags, on="movieId", how="left")
        .join(overviews, on="movieId", how="left")
        .select(
            pl.col("movieId").alias("item_id"),
            "title",
            pl.when(pl.col("genres") == "(no genres listed)")
            .then(None)
            .otherwise(pl.col("genres"))
            .alias("categories"),
            "tags",
            "description",
        )
    )


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=None, help="a seeded sample of N movies")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--repeats", type=int, default=1, help="timing runs per contender (best kept)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    catalog = movielens_catalog()
    if args.limit is not None and args.limit < catalog.height:
        catalog = catalog.sample(n=args.limit, seed=0, shuffle=True)
    texts_df, text_stats = build_item_texts(catalog, EmbeddingConfig().template)
    texts_df = texts_df.filter(pl.col("text") != "")
    texts = texts_df["text"].to_list()

    files = resolve_model(None)
    st = SentenceTransformer(str(files.path), device="cpu")
    max_length = int(st.max_seq_length)
    cfg = EmbeddingConfig(batch_size=args.batch_size, max_length=max_length, threads=threads)
    ours = TextEncoder(files, max_length=max_length, threads=threads)
    fast = TextEncoder(files, max_length=max_length, threads=threads, quantize=True)
    print(
        f"{len(texts)} texts ({text_stats.n_items} movies), model {ours.model_id}, threads {threads}, "
        f"batch {args.batch_size}, max_length {max_length}, cpus {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    warm = texts[:32]
    st.encode(warm, batch_size=args.batch_size)
    ours.encode(warm, batch_size=args.batch_size)
    fast.encode(warm, batch_size=args.batch_size)

    best = {"st": float("inf"), "ours": float("inf"), "fast": float("inf")}
    vecs: dict[str, np.ndarray] = {}
    for r in range(args.repeats):
        t = time.perf_counter()
        vecs["st"] = st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
        best["st"] = min(best["st"], time.perf_counter() - t)
        for name, enc in (("ours", ours), ("fast", fast)):
            t = time.perf_counter()
            vecs[name] = enc.encode(texts, batch_size=args.batch_size)
            best[name] = min(best[name], time.perf_counter() - t)
        print(
            f"  run {r + 1}: sentence-transformers {best['st']:.1f}s, float32 {best['ours']:.1f}s, "
            f"int8 {best['fast']:.1f}s (best so far), load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    stats = ours.last_stats
    print(
        f"tokens: {stats.n_tokens / max(len(texts), 1):.1f} per text, {stats.n_truncated} truncated "
        f"at {max_length}, padding {stats.n_padded / max(stats.n_tokens, 1):.1%} of real tokens"
    )

    figures: dict[str, float] = {
        "n_texts": len(texts),
        "threads": threads,
        "batch_size": args.batch_size,
    }
    for name in ("st", "ours", "fast"):
        figures[f"texts_per_s_{name}"] = len(texts) / best[name]
    rows = []
    speed32, speed8 = best["st"] / best["ours"], best["st"] / best["fast"]
    rows.append(
        (
            "throughput float32 vs sentence-transformers",
            f"{speed32:.2f}x",
            ">= 1.0x",
            verdict(speed32, 1.0),
        )
    )
    rows.append(
        (
            "throughput int8 fast mode vs sentence-transformers",
            f"{speed8:.2f}x",
            ">= 2.0x",
            verdict(speed8, 2.0),
        )
    )
    cos32 = (vecs["ours"] * vecs["st"]).sum(axis=1)
    cos8 = (vecs["fast"] * vecs["st"]).sum(axis=1)
    rows.append(
        (
            "agreement float32: mean cosine with s-t",
            f"{cos32.mean():.5f} (min {cos32.min():.5f})",
            ">= 0.999",
            verdict(float(cos32.mean()), 0.999),
        )
    )
    rows.append(
        (
            "agreement int8: mean cosine with s-t",
            f"{cos8.mean():.5f} (min {cos8.min():.5f})",
            ">= 0.99",
            verdict(float(cos8.mean()), 0.99),
        )
    )
    figures.update(
        speedup_float32=speed32,
        speedup_int8=speed8,
        cos_float32_mean=float(cos32.mean()),
        cos_float32_min=float(cos32.min()),
        cos_int8_mean=float(cos8.mean()),
        cos_int8_min=float(cos8.min()),
    )

    # incremental: a full embed_catalog, then one after 1% of the texts changed
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        full = embed_catalog(catalog, store, cfg, encoder=ours, log=lambda _: None)
        step = 100
        changed = (
            catalog.with_row_index("_i")
            .with_columns(
                pl.when(pl.col("_i") % step == 0)
                .then(pl.col("title") + " (restored edition)")
                .otherwise(pl.col("title"))
                .alias("title")
            )
            .drop("_i")
        )
        inc = embed_catalog(changed, store, cfg, encoder=ours, log=lambda _: None)
        table = load_embeddings(store, ours.model_id)
        matrix, mask = embedding_matrix(table, texts_df["item_id"].to_list())
        assert mask.all(), "every non-empty text has a vector"
    share = inc.seconds / full.seconds
    rows.append(
        (
            f"incremental: {inc.n_embedded} of {inc.n_items} changed ({inc.n_embedded / inc.n_items:.1%})",
            f"{inc.seconds:.2f}s / {full.seconds:.1f}s = {share:.1%}",
            "<= 5%",
            verdict(share, 0.05, higher_is_better=False),
        )
    )
    figures.update(full_run_s=full.seconds, incremental_run_s=inc.seconds, incremental_share=share)

    width = max(len(r[0]) for r in rows)
    print()
    for label, value, target, ok in rows:
        print(f"{label:<{width}}  {value:<28} target {target:<9} {ok}")
    print(
        f"\nrates (texts/s): sentence-transformers {figures['texts_per_s_st']:.1f}, float32 "
        f"{figures['texts_per_s_ours']:.1f}, int8 {figures['texts_per_s_fast']:.1f}; "
        f"load average at end {os.getloadavg()[0]:.1f}"
    )
    if args.json:
        atomic_write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
