"""Sources of landing data: a synthetic generator with planted structure, and a MovieLens replay.

Both write ``<out>/events/date=YYYY-MM-DD/*`` and ``<out>/items/date=YYYY-MM-DD/*`` files
atomically, in the layout :mod:`recsys_core.ingest` reads.
"""

from recsys_core.landing._movielens import replay_movielens
from recsys_core.landing._synthetic import generate_synthetic

__all__ = ["generate_synthetic", "replay_movielens"]
