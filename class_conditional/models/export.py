"""Map a trained :class:`~models.dit.DiT` onto ppdiffusers' ``Transformer2DModel``
(``norm_type="ada_norm_zero"``), the transformer that ``DiTPipeline`` runs.

Differences handled here: ppdiffusers keeps a timestep embedder and a class embedder inside
every block (``transformer_blocks.i.norm1.emb.*``) while DiT shares one; the shared weights are
copied into each block.  The per-block modulation ``adaLN_modulation`` becomes
``norm1.linear``.  Everything else has the same names and shapes.

What cannot be carried over: ``Transformer2DModel`` embeds timesteps with frequency shift 1 while
official DiT uses 0 (see :mod:`models.dit`); :func:`export_error` measures the
difference, which is ~1e-6 only for models trained with ``downscale_freq_shift`` 1.
"""
import paddle

__all__ = ["transformer2d_config", "to_transformer2d_state_dict", "to_transformer2d", "export_error"]


def transformer2d_config(cfg):
    """``Transformer2DModel`` config dict for a DiT model config dict (validated)."""
    return {
        "num_attention_heads": cfg["num_heads"],
        "attention_head_dim": cfg["hidden_size"] // cfg["num_heads"],
        "in_channels": cfg["in_channels"],
        "out_channels": cfg["in_channels"] * (2 if cfg["learn_sigma"] else 1),
        "num_layers": cfg["depth"],
        "dropout": 0.0,
        "norm_num_groups": 32,
        "attention_bias": True,
        "sample_size": cfg["input_size"],
        "patch_size": cfg["patch_size"],
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": cfg["num_classes"],
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,
        "upcast_attention": False,
        "use_linear_projection": False,
    }


def to_transformer2d_state_dict(state_dict, depth):
    """Rename/copy a DiT ``state_dict`` (name -> tensor) into ``Transformer2DModel`` names."""
    out = {}
    shared = {k: v for k, v in state_dict.items() if k.startswith(("timestep_embedder.", "class_embedder."))}
    for k, v in state_dict.items():
        if k in shared:
            continue
        if k.startswith("transformer_blocks.") and ".adaLN_modulation." in k:
            k = k.replace(".adaLN_modulation.", ".norm1.linear.")
        out[k] = v
    for i in range(depth):
        for k, v in shared.items():
            out[f"transformer_blocks.{i}.norm1.emb.{k}"] = v
    return out


def export_error(model, transformer, cfg, seed=0):
    """Largest ``|DiT(x, t, y) - Transformer2DModel(x, t, y)|`` over a probe batch (N(0, 1)
    latents, t = 0, 250, 500, 999, labels 0..3), and the largest ``|DiT(x, t, y)|`` for scale.

    It is ~1e-6 when the model was trained with ``downscale_freq_shift`` 1 (what
    ``Transformer2DModel`` computes) and larger for the official shift 0.  Returns two floats.
    """
    gen = paddle.get_rng_state()
    paddle.seed(seed)
    try:
        s, c = cfg["input_size"], cfg["in_channels"]
        x = paddle.randn([4, c, s, s])
        t = paddle.to_tensor([0, 250, 500, 999], dtype="int64")
        y = paddle.to_tensor([i % cfg["num_classes"] for i in range(4)], dtype="int64")
        was_training = model.training
        model.eval()
        with paddle.no_grad():
            ours = model(x, t, y)
            theirs = transformer(x, timestep=t, class_labels=y).sample
        model.train(was_training)
    finally:
        paddle.set_rng_state(gen)
    return float((ours - theirs).abs().max()), float(ours.abs().max())


def to_transformer2d(model, cfg):
    """A ppdiffusers ``Transformer2DModel`` holding ``model``'s weights (eval mode).

    Raises:
        RuntimeError: a weight name or shape does not match (the ppdiffusers layout changed).
    """
    from ppdiffusers import Transformer2DModel

    target = Transformer2DModel(**transformer2d_config(cfg))
    mapped = to_transformer2d_state_dict(model.state_dict(), cfg["depth"])
    expected = target.state_dict()
    missing = sorted(set(expected) - set(mapped))
    extra = sorted(set(mapped) - set(expected))
    if missing or extra:
        raise RuntimeError(f"DiT -> Transformer2DModel weight names differ: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, v in mapped.items():
        if list(v.shape) != list(expected[k].shape):
            raise RuntimeError(f"DiT -> Transformer2DModel shape mismatch for {k}: {v.shape} vs {expected[k].shape}")
    target.set_state_dict({k: paddle.assign(v) for k, v in mapped.items()})
    target.eval()
    return target
