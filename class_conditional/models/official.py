"""The official DiT / SiT checkpoint layout (facebookresearch/DiT ``models.DiT``; willisma/SiT uses
the same backbone and names) and its mapping onto :class:`~models.dit.DiT`.

Official names and shapes (PyTorch ``nn.Linear`` weights are ``(out, in)``; paddle's are
``(in, out)``, so every 2-D linear weight is transposed):

=============================================  =====================================
official                                       this project
=============================================  =====================================
``x_embedder.proj.{weight,bias}`` (conv)       ``pos_embed.proj.{weight,bias}``
``pos_embed`` (fixed 2-D sin-cos, 1 x T x D)   recomputed by ``PatchEmbed`` (checked)
``t_embedder.mlp.0`` / ``t_embedder.mlp.2``     ``timestep_embedder.linear_1`` / ``linear_2``
``y_embedder.embedding_table.weight``          ``class_embedder.embedding_table.weight``
``blocks.i.attn.qkv`` (D -> 3D, q|k|v)          ``transformer_blocks.i.attn1.to_q|to_k|to_v``
``blocks.i.attn.proj``                         ``transformer_blocks.i.attn1.to_out.0``
``blocks.i.mlp.fc1`` / ``fc2``                 ``transformer_blocks.i.ff.net.0.proj`` / ``ff.net.2``
``blocks.i.adaLN_modulation.1``                ``transformer_blocks.i.adaLN_modulation``
``final_layer.adaLN_modulation.1``             ``proj_out_1``
``final_layer.linear``                         ``proj_out_2``
=============================================  =====================================

The official model embeds timesteps with ``downscale_freq_shift`` 0, which is this DiT's default,
so a converted checkpoint computes the official function (to ~1e-5 in float32; checked against
the official code in a torch venv, numbers pinned in tests/test_class_conditional.py).
"""
import numpy as np

__all__ = ["OFFICIAL_MODEL_CONFIGS", "official_shapes", "from_official_state_dict"]

# ``--model_name`` of the official repos -> config file next to the training scripts
OFFICIAL_MODEL_CONFIGS = {
    "DiT-XL/2": "config/DiT_XL_patch2.json",
    "DiT-L/4": "config/DiT_L_patch4.json",
    "DiT-B/4": "config/DiT_B_patch4.json",
    "DiT-S/4": "config/DiT_S_patch4.json",
    "DiT-S/2": "config/DiT_S_patch2.json",
    "SiT-XL/2": "config/SiT_XL_patch2.json",
}


def official_shapes(cfg):
    """``{name: shape}`` of an official DiT/SiT ``state_dict`` for a validated model config dict
    (see :func:`~models.dit.load_model_config`)."""
    d, c, p = cfg["hidden_size"], cfg["in_channels"], cfg["patch_size"]
    out_c = c * (2 if cfg["learn_sigma"] else 1)
    mlp = int(d * cfg["mlp_ratio"])
    tokens = (cfg["input_size"] // p) ** 2
    table = cfg["num_classes"] + (1 if cfg["class_dropout_prob"] > 0 else 0)
    shapes = {
        "x_embedder.proj.weight": (d, c, p, p), "x_embedder.proj.bias": (d,), "pos_embed": (1, tokens, d),
        "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (table, d),
        "final_layer.linear.weight": (p * p * out_c, d), "final_layer.linear.bias": (p * p * out_c,),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
    }
    for i in range(cfg["depth"]):
        b = f"blocks.{i}."
        shapes.update({
            b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "mlp.fc1.weight": (mlp, d), b + "mlp.fc1.bias": (mlp,),
            b + "mlp.fc2.weight": (d, mlp), b + "mlp.fc2.bias": (d,),
            b + "adaLN_modulation.1.weight": (6 * d, d), b + "adaLN_modulation.1.bias": (6 * d,),
        })
    return shapes


def from_official_state_dict(state_dict, cfg, reference_pos_embed=None):
    """Map an official DiT/SiT ``state_dict`` onto this project's DiT parameter names.

    Args:
        state_dict: ``{name: array}`` (numpy arrays or anything ``np.asarray`` takes, float
            dtypes of any width) in the official layout; an ``ema``/``model`` wrapper dict as
            saved by the official ``train.py`` must be unwrapped by the caller.
        cfg: validated model config dict with the official sizes.
        reference_pos_embed: optional ``(T, D)`` array, this model's fixed positional embedding;
            when given, a ``pos_embed`` in the file must equal it (to 1e-4).

    Returns:
        ``{project name: float32 numpy array}`` for ``DiT.set_state_dict``.

    Raises:
        ValueError: missing or unexpected keys, or shapes that do not fit ``cfg`` (all listed),
            or a ``pos_embed`` that differs from the model's sin-cos table.
    """
    expected = official_shapes(cfg)
    given = {k: np.asarray(v) for k, v in state_dict.items()}
    missing = sorted(set(expected) - set(given) - {"pos_embed"})
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(f"{k}: {tuple(given[k].shape)} != {expected[k]}" for k in set(given) & set(expected)
                   if tuple(given[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        raise ValueError(f"not an official {cfg.get('model_type', 'DiT')} checkpoint for this config: "
                         f"{len(missing)} missing {missing[:8]}, {len(unexpected)} unexpected {unexpected[:8]}, "
                         f"{len(wrong)} wrong shapes {wrong[:8]}")
    if reference_pos_embed is not None and "pos_embed" in given:
        diff = float(np.abs(given["pos_embed"].reshape(reference_pos_embed.shape) - reference_pos_embed).max())
        if diff > 1e-4:
            raise ValueError(f"the checkpoint's pos_embed differs from the fixed 2-D sin-cos table by {diff:.3g}")

    def f32(a):
        return np.ascontiguousarray(a.astype(np.float32))

    d = cfg["hidden_size"]
    out = {
        "pos_embed.proj.weight": f32(given["x_embedder.proj.weight"]),
        "pos_embed.proj.bias": f32(given["x_embedder.proj.bias"]),
        "timestep_embedder.linear_1.weight": f32(given["t_embedder.mlp.0.weight"].T),
        "timestep_embedder.linear_1.bias": f32(given["t_embedder.mlp.0.bias"]),
        "timestep_embedder.linear_2.weight": f32(given["t_embedder.mlp.2.weight"].T),
        "timestep_embedder.linear_2.bias": f32(given["t_embedder.mlp.2.bias"]),
        "class_embedder.embedding_table.weight": f32(given["y_embedder.embedding_table.weight"]),
        "proj_out_1.weight": f32(given["final_layer.adaLN_modulation.1.weight"].T),
        "proj_out_1.bias": f32(given["final_layer.adaLN_modulation.1.bias"]),
        "proj_out_2.weight": f32(given["final_layer.linear.weight"].T),
        "proj_out_2.bias": f32(given["final_layer.linear.bias"]),
    }
    for i in range(cfg["depth"]):
        b, n = f"blocks.{i}.", f"transformer_blocks.{i}."
        qkv_w, qkv_b = given[b + "attn.qkv.weight"], given[b + "attn.qkv.bias"]
        for j, name in enumerate(("to_q", "to_k", "to_v")):  # rows q | k | v of the fused matrix
            out[n + f"attn1.{name}.weight"] = f32(qkv_w[j * d:(j + 1) * d].T)
            out[n + f"attn1.{name}.bias"] = f32(qkv_b[j * d:(j + 1) * d])
        out[n + "attn1.to_out.0.weight"] = f32(given[b + "attn.proj.weight"].T)
        out[n + "attn1.to_out.0.bias"] = f32(given[b + "attn.proj.bias"])
        out[n + "ff.net.0.proj.weight"] = f32(given[b + "mlp.fc1.weight"].T)
        out[n + "ff.net.0.proj.bias"] = f32(given[b + "mlp.fc1.bias"])
        out[n + "ff.net.2.weight"] = f32(given[b + "mlp.fc2.weight"].T)
        out[n + "ff.net.2.bias"] = f32(given[b + "mlp.fc2.bias"])
        out[n + "adaLN_modulation.weight"] = f32(given[b + "adaLN_modulation.1.weight"].T)
        out[n + "adaLN_modulation.bias"] = f32(given[b + "adaLN_modulation.1.bias"])
    return out
