"""SASRec: a causal self-attention Transformer over each user's chronological history.

Sequences. A user's items are ordered by ``interactions.last_ts`` (the latest time of each pair;
ties by item index). Without timestamps (``last_ts is None``) there is no order to learn: the items
are taken in item-index order for scoring and validation, and each training epoch reshuffles them
(seeded), so the model learns which items go together rather than an arbitrary order.

Network. Item ``i`` (index ``i + 1``; 0 is padding) has the embedding
``e_i = id_i + W t_i`` where ``t_i`` is its unit text vector (zero when it has none) and ``W`` a
learned projection (``text_init=True`` with item embeddings given; otherwise ``e_i = id_i``).
Inputs are ``e`` plus a learned position embedding over a left-padded window of ``max_len``
positions; ``blocks`` pre-norm Transformer blocks (``heads`` heads, causal attention, padded keys
masked, every position may see itself so padded rows stay finite); a final LayerNorm gives the
hidden state ``h``. The score of item ``i`` after a prefix is ``h . e_i`` (tied input/output
embeddings). The padding row is never scored.

Training: next-item full-softmax cross-entropy at every position (or, with ``target_fraction``
< 1, at a random share of them drawn each step: on a big catalog the softmax dominates the cost),
AdamW (``reg`` = weight decay).
Each user's last item is held out; after every epoch the model ranks it from the user's preceding
items (seen items excluded) and training stops when the monitored score has not improved for
``patience`` epochs: by default the cross-entropy of those held-out items (``monitor="loss"``,
smooth), or their NDCG@10 (``monitor="ndcg"``, ties broken by the loss; with one target per user
it counts a few dozen hits and jumps by noise). The best epoch's weights are kept (they are not
refit on the held-out items). Attention runs through torch's fused
``scaled_dot_product_attention``; dropout applies to the inputs and residual branches.

Items that never occur in the training sequences are left out of the
training softmax: their ``id`` part stays zero, so a cold item scores by its text projection alone
(and 0 without text) instead of being pushed down for never occurring.

Scoring uses each user's last ``max_len`` items (held-out one included), on the CPU in float64
rounded to float32, so scores do not depend on the block size. The weights are saved as float32
arrays (``w_<state_dict key>``) with the users' scoring sequences, and the per-epoch training
history (``history_``: losses, validation NDCG@10, seconds, sequences/s) and ``best_epoch_`` in
``model.json``; no pickle.
"""

from __future__ import annotations

import copy
import functools
import logging
import sys
import time
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from recsys_core.interactions import Interactions
from recsys_core.models._base import ModelConfig, Recommender
from recsys_core.models.hybrid import unit_item_vectors

__all__ = ["SASRec", "SASRecConfig"]

logger = logging.getLogger("recsys_core.models.sasrec")


class SASRecConfig(ModelConfig):
    embedding_size: int = Field(default=64, ge=4, description="Width of item states.")
    blocks: int = Field(default=2, ge=1, description="Transformer blocks.")
    heads: int = Field(default=2, ge=1, description="Attention heads (divide embedding_size).")
    # dropout and weight decay default to what MovieLens latest-small needed (bench_sasrec.py):
    # without them the item table memorises a small catalog's sequences
    dropout: float = Field(default=0.5, ge=0, lt=1, description="Dropout on inputs and blocks.")
    max_len: int = Field(default=50, ge=2, description="Latest items a user's state reads.")
    epochs: int = Field(default=30, ge=1, description="Most training epochs.")
    learning_rate: float = Field(default=1e-3, gt=0, description="AdamW learning rate.")
    reg: float = Field(default=0.5, ge=0, description="AdamW (decoupled) weight decay.")
    batch_size: int = Field(default=64, ge=1, description="Training windows per step.")
    patience: int = Field(
        default=5, ge=1, description="Epochs without a better validation score before stopping."
    )
    monitor: Literal["loss", "ndcg"] = Field(
        default="loss",
        description="Early-stopping score on the held-out items: their cross-entropy (smooth; "
        "the default) or NDCG@10 (what is reported, but a noisy count of a few hits).",
    )
    target_fraction: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of positions whose next item is a training target, drawn afresh each "
        "step (1 = all; less makes a full-softmax epoch proportionally cheaper on big catalogs).",
    )
    text_init: bool = Field(
        default=True, description="Fuse item text vectors into item embeddings (when given)."
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        default="cpu", description="Training device; auto = cuda when available."
    )
    threads: int = Field(default=1, ge=1, description="torch CPU threads while fitting/scoring.")
    progress: bool = Field(default=True, description="A tqdm bar per fit (only on a terminal).")

    @model_validator(mode="after")
    def _heads_divide(self) -> SASRecConfig:
        if self.embedding_size % self.heads:
            raise ValueError(
                f"embedding_size={self.embedding_size} is not a multiple of heads={self.heads}"
            )
        return self


@functools.cache
def _net_class() -> type:
    """The torch network class, defined on first use so importing the models never loads torch."""
    import torch
    from torch import nn

    class _Block(nn.Module):
        """Pre-norm block: causal multi-head self-attention, then a position-wise feed-forward."""

        def __init__(self, d: int, heads: int, dropout: float) -> None:
            super().__init__()
            self.heads = heads
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.out = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
            self.drop = nn.Dropout(dropout)

        def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
            b, n, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (b, heads, n, d_head)
            # fused attention (no dropout on the attention weights: the fused CPU kernel is about
            # twice as fast without it; inputs and residual branches keep theirs)
            y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
            y = y.transpose(1, 2).reshape(b, n, d)
            x = x + self.drop(self.out(y))
            return x + self.drop(self.ff(self.ln2(x)))

    class _Net(nn.Module):
        def __init__(self, n_items: int, cfg: SASRecConfig, text_dim: int) -> None:
            super().__init__()
            d = cfg.embedding_size
            self.item_id = nn.Embedding(n_items + 1, d, padding_idx=0)
            self.pos = nn.Embedding(cfg.max_len, d)
            self.text_proj = nn.Linear(text_dim, d, bias=False) if text_dim else None
            self.register_buffer("text", torch.zeros(n_items + 1, text_dim))
            self.blocks = nn.ModuleList(
                _Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.blocks)
            )
            self.ln = nn.LayerNorm(d)
            self.drop = nn.Dropout(cfg.dropout)

        def item_table(self) -> torch.Tensor:
            """``(n_items + 1, d)`` embeddings; row 0 (padding) is zero."""
            table = self.item_id.weight
            if self.text_proj is not None:
                table = table + self.text_proj(self.text)
            return table

        def forward(self, seq: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
            """Hidden states ``(b, n, d)`` of left-padded item sequences ``(b, n)`` (0 = padding)."""
            table = self.item_table() if table is None else table
            n = seq.shape[1]
            real = seq > 0
            x = table[seq] + self.pos.weight[-n:]
            x = self.drop(x) * real.unsqueeze(-1)
            causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
            eye = torch.eye(n, dtype=torch.bool, device=seq.device)
            allowed = (causal & real[:, None, None, :]) | eye  # (b, 1, n, n)
            for block in self.blocks:
                x = block(x, allowed)
            return self.ln(x)

    return _Net


def _user_sequences(inter: Interactions) -> tuple[list[np.ndarray], bool]:
    """Each user's item indices in time order (ties by item), and whether the order is temporal."""
    m = inter.matrix.tocsr()
    ts = None if inter.last_ts is None else inter.last_ts.tocsr()
    seqs = []
    for u in range(m.shape[0]):
        lo, hi = m.indptr[u], m.indptr[u + 1]
        items = m.indices[lo:hi]
        if ts is not None:  # a pair without a time sorts first
            ti, tv = (
                ts.indices[ts.indptr[u] : ts.indptr[u + 1]],
                ts.data[ts.indptr[u] : ts.indptr[u + 1]],
            )
            o = np.argsort(ti)
            ti, tv = ti[o], tv[o]
            pos = np.minimum(np.searchsorted(ti, items), max(len(ti) - 1, 0))
            t = (
                np.where(ti[pos] == items, tv[pos], -np.inf)
                if len(ti)
                else np.full(len(items), -np.inf)
            )
            items = items[np.lexsort((items, t))]
        else:
            items = np.sort(items)
        seqs.append(items.astype(np.int64))
    return seqs, ts is not None


def _left_pad(seqs: list[np.ndarray], n: int) -> np.ndarray:
    """``(len(seqs), n)`` model indices (item + 1) of each sequence's last ``n``, left-padded."""
    out = np.zeros((len(seqs), n), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-n:]
        if len(s):
            out[r, n - len(s) :] = s + 1
    return out


def _windows(seqs: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Training windows: inputs and next-item targets ``(w, n)``, left-padded, disjoint targets."""
    inputs, targets = [], []
    for s in seqs:
        end = len(s)
        while end > 1:
            start = max(0, end - n - 1)
            inputs.append(s[start : end - 1])
            targets.append(s[start + 1 : end])
            end = start + 1
    return _left_pad(inputs, n), _left_pad(targets, n)


class SASRec(Recommender):
    """Self-attentive sequential recommender (Kang & McAuley 2018), optionally text-fused."""

    name = "sasrec"
    config_class = SASRecConfig
    uses_embeddings = True

    @classmethod
    def search_space(cls, fixed: dict[str, Any]) -> list[Any]:
        """The scikit-optimize dimensions to tune, given the pinned parameters ``fixed``."""
        from skopt.space import Categorical, Integer, Real  # slow to import: only when tuning

        # modest CPU ranges; embedding_size stays a multiple of every heads value (1, 2 or 4)
        return [
            Categorical([32, 64, 128], name="embedding_size"),
            Integer(1, 3, name="blocks"),
            Categorical([1, 2, 4], name="heads"),
            Real(0.0, 0.5, name="dropout"),
            Real(1e-4, 1e-2, prior="log-uniform", name="learning_rate"),
            Categorical([50, 100, 200], name="max_len"),
            # AdamW weight decay: on small catalogs the item table overfits without it
            Real(1e-3, 2.0, prior="log-uniform", name="reg"),
        ]

    def _device(self) -> Any:
        import torch

        want = self.config.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("SASRec: device='cuda' but torch sees no CUDA device; use 'cpu'")
        return torch.device(want)

    def _fit(
        self,
        interactions: Interactions,
        *,
        items: pl.DataFrame | None,
        item_embeddings: pl.DataFrame | None,
    ) -> None:
        import torch

        cfg = self.config
        n_items = interactions.n_items
        text = None
        if cfg.text_init and item_embeddings is not None and item_embeddings.height:
            text = unit_item_vectors(item_embeddings, interactions.item_ids)
        elif cfg.text_init:
            logger.warning("SASRec.fit: text_init=True but no item embeddings; random init")
        seqs, ordered = _user_sequences(interactions)
        self.sequences_ = [s[-cfg.max_len :] for s in seqs]
        if not ordered:  # no last item to speak of: hold out a seeded random one per user
            rng = np.random.default_rng(cfg.seed)
            seqs = [np.roll(s, -1 - int(rng.integers(len(s)))) if len(s) else s for s in seqs]
        train = [s[:-1] for s in seqs]
        has_valid = np.array([len(s) >= 2 for s in seqs])
        valid_users = np.flatnonzero(has_valid)
        valid_prefix = _left_pad([train[u] for u in valid_users], cfg.max_len)
        valid_target = np.array([seqs[u][-1] for u in valid_users], dtype=np.int64)
        in_train = np.zeros(n_items, dtype=bool)
        for s in train:
            if len(s) >= 2:
                in_train[s] = True
        threads, deterministic = (
            torch.get_num_threads(),
            torch.are_deterministic_algorithms_enabled(),
        )
        torch.set_num_threads(cfg.threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                net = self._train(train, ordered, text, in_train, valid_prefix, valid_target)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
        self.net_ = net.cpu().eval()
        self._scorer = None

    def _build(self, n_items: int, text: np.ndarray | None, in_train: np.ndarray) -> Any:
        import torch
        from torch import nn

        net = _net_class()(n_items, self.config, 0 if text is None else text.shape[1])
        with torch.no_grad():
            w = net.item_id.weight
            nn.init.normal_(w, std=0.1)
            # items with a text vector start from it alone; untrained items keep a zero id part
            keep = in_train.copy()
            if text is not None:
                keep &= ~(np.abs(text).sum(axis=1) > 0)
                net.text[1:] = torch.from_numpy(text)
            w[1:][torch.from_numpy(~keep)] = 0.0
            w[0] = 0.0
        return net

    def _train(
        self,
        train: list[np.ndarray],
        ordered: bool,
        text: np.ndarray | None,
        in_train: np.ndarray,
        valid_prefix: np.ndarray,
        valid_target: np.ndarray,
    ) -> Any:
        import torch
        from torch import nn

        cfg = self.config
        dev = self._device()
        rng = np.random.default_rng(cfg.seed)
        net = self._build(len(in_train), text, in_train).to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.reg)
        untrained = torch.from_numpy(~in_train).to(dev)
        best: tuple[float, float] | None = None
        best_state, bad, best_epoch = copy.deepcopy(net.state_dict()), 0, 0
        self.history_: list[dict[str, float]] = []
        epochs = range(cfg.epochs)
        bar = None
        if cfg.progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            bar = tqdm(epochs, desc="SASRec", unit="epoch", leave=False)
            epochs = bar
        windows = _windows(train, cfg.max_len) if ordered else None
        for epoch in epochs:
            started = time.perf_counter()
            if not ordered:  # no time order to learn: a fresh random order every epoch
                windows = _windows([rng.permutation(s) for s in train], cfg.max_len)
            inputs, targets = windows
            net.train()
            total, count = 0.0, 0
            for b in np.array_split(
                rng.permutation(len(inputs)), max(1, -(-len(inputs) // cfg.batch_size))
            ):
                if not len(b):
                    continue
                seq = torch.from_numpy(inputs[b]).to(dev)
                tgt = torch.from_numpy(targets[b]).to(dev)
                table = net.item_table()
                h = net(seq, table)
                real = tgt > 0
                if cfg.target_fraction < 1.0:
                    real &= torch.rand(real.shape, device=dev) < cfg.target_fraction
                if not real.any():
                    continue
                logits = h[real] @ table[1:].T
                logits = logits.masked_fill(untrained, float("-inf"))
                loss = nn.functional.cross_entropy(logits, tgt[real] - 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * int(real.sum())
                count += int(real.sum())
            train_seconds = time.perf_counter() - started
            ndcg, vloss = self._validate(net, valid_prefix, valid_target, dev)
            seconds = time.perf_counter() - started
            train_loss = total / max(count, 1)
            self.history_.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "valid_loss": vloss,
                    "valid_ndcg": ndcg,
                    "seconds": seconds,
                    "sequences_per_s": len(inputs) / max(train_seconds, 1e-9),
                }
            )
            logger.info(
                "SASRec epoch %d: train loss %.4f, valid ndcg@10 %.4f, valid loss %.4f, %.1f s",
                epoch + 1,
                train_loss,
                ndcg,
                vloss,
                seconds,
            )
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.3f}", ndcg=f"{ndcg:.4f}", s=f"{seconds:.1f}")
            score = (-vloss, ndcg) if cfg.monitor == "loss" else (ndcg, -vloss)
            if best is None or score > best:
                best, bad, best_epoch = score, 0, epoch + 1
                best_state = copy.deepcopy(net.state_dict())
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        if bar is not None:
            bar.close()
        self.best_epoch_ = best_epoch
        net.load_state_dict(best_state)
        return net

    def _validate(
        self, net: Any, prefix: np.ndarray, target: np.ndarray, dev: Any
    ) -> tuple[float, float]:
        """NDCG@10 and cross-entropy of each held-out last item given the user's earlier items."""
        import torch

        if not len(target):
            return 0.0, 0.0
        net.eval()
        with torch.no_grad():
            return self._validate_rows(net, net.item_table(), prefix, target, dev)

    @staticmethod
    def _validate_rows(
        net: Any, table: Any, prefix: np.ndarray, target: np.ndarray, dev: Any
    ) -> tuple[float, float]:
        import torch
        from torch import nn

        ndcg, loss = 0.0, 0.0
        for start in range(0, len(target), 256):
            seq = torch.from_numpy(prefix[start : start + 256]).to(dev)
            tgt = torch.from_numpy(target[start : start + 256]).to(dev)
            logits = net(seq, table)[:, -1] @ table[1:].T
            rows = torch.arange(len(seq), device=dev)[:, None].expand_as(seq)
            real = seq > 0
            logits[rows[real], seq[real] - 1] = float("-inf")  # seen items are never ranked
            loss += float(nn.functional.cross_entropy(logits, tgt, reduction="sum"))
            rank = (logits > logits.gather(1, tgt[:, None])).sum(1)
            ndcg += float(torch.where(rank < 10, 1.0 / torch.log2(rank + 2.0), 0.0).sum())
        return ndcg / len(target), loss / len(target)

    # ---- scoring and persistence -------------------------------------------------------------
    def _score_block(self, user_index: np.ndarray) -> np.ndarray:
        import torch

        if self._scorer is None:
            scorer = copy.deepcopy(self.net_).double().eval()
            with torch.no_grad():
                self._scorer = (scorer, scorer.item_table())
        scorer, table = self._scorer
        seq = torch.from_numpy(
            _left_pad([self.sequences_[u] for u in user_index], self.config.max_len)
        )
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            with torch.no_grad():
                h = scorer(seq, table)[:, -1]
                return (h @ table[1:].T).float().numpy()
        finally:
            torch.set_num_threads(threads)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {
            f"w_{k}": v.detach().cpu().float().numpy() for k, v in self.net_.state_dict().items()
        }
        lengths = np.array([len(s) for s in self.sequences_], dtype=np.int64)
        arrays["seq_indptr"] = np.concatenate([[0], np.cumsum(lengths)])
        arrays["seq_items"] = (
            np.concatenate(self.sequences_).astype(np.int64)
            if lengths.sum()
            else np.zeros(0, np.int64)
        )
        text_dim = int(self.net_.text.shape[1])
        return arrays, {
            "n_items": int(self.net_.item_id.num_embeddings - 1),
            "text_dim": text_dim,
            # the training curve travels with the weights (model.json), for reports and audits
            "best_epoch": int(getattr(self, "best_epoch_", 0)),
            "history": list(getattr(self, "history_", [])),
        }

    def _set_state(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        import torch

        net = _net_class()(int(scalars["n_items"]), self.config, int(scalars["text_dim"]))
        state = {k[2:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("w_")}
        net.load_state_dict(state)
        self.net_ = net.eval()
        self._scorer = None
        self.best_epoch_ = int(scalars.get("best_epoch", 0))
        self.history_ = list(scalars.get("history", []))
        ptr, items = arrays["seq_indptr"], arrays["seq_items"]
        self.sequences_ = [items[ptr[u] : ptr[u + 1]] for u in range(len(ptr) - 1)]
