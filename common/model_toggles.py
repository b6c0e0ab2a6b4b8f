"""``--recompute`` and ``--enable_xformers_memory_efficient_attention`` for ppdiffusers models.

Both are optional speed/memory trade-offs; a backend that does not support one (memory-efficient
attention needs a GPU kernel) keeps the default and says so instead of failing.
"""
from common.logging_utils import get_logger

__all__ = ["apply_model_toggles"]


def apply_model_toggles(model, recompute=False, memory_efficient_attention=False, name="model"):
    """Turn on gradient checkpointing and/or memory-efficient attention on a ppdiffusers model.

    Args:
        model: a ``ppdiffusers`` ``ModelMixin`` (UNet, transformer, ...).
        recompute: call ``enable_gradient_checkpointing()`` (recompute activations in backward).
        memory_efficient_attention: call ``enable_xformers_memory_efficient_attention()``.

    Returns:
        dict ``{"recompute": bool, "memory_efficient_attention": bool}`` of what is actually on.
    """
    logger = get_logger("toggles")
    state = {"recompute": False, "memory_efficient_attention": False}
    if recompute:
        if getattr(model, "_supports_gradient_checkpointing", False) or hasattr(model, "enable_gradient_checkpointing"):
            try:
                model.enable_gradient_checkpointing()
                state["recompute"] = True
            except Exception as e:
                logger.warning("%s: recompute not supported (%s); training without it", name, e)
        else:
            logger.warning("%s: recompute not supported by %s", name, type(model).__name__)
    if memory_efficient_attention:
        try:
            model.enable_xformers_memory_efficient_attention()
            state["memory_efficient_attention"] = True
        except Exception as e:
            logger.warning("%s: memory-efficient attention unavailable here (%s); using default attention", name, e)
    return state
