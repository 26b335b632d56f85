"""The model registry: every trained model with its parameters, data window and metrics, which one
is champion and how it got there; and the one scheme of model ids (:func:`make_model_id`)."""

from recsys_core.registry._registry import (
    MODEL_ID_RE,
    ModelRegistry,
    UnknownModelError,
    make_model_id,
)

__all__ = ["MODEL_ID_RE", "ModelRegistry", "UnknownModelError", "make_model_id"]
