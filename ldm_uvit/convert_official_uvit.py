"""Convert an official U-ViT text-to-image checkpoint (baofff/U-ViT ``libs/uvit_t2i.py``) into the
model folder that ``generate_pipelines.py --model_file`` takes.

    # U-ViT-S/2 (deep), the MS-COCO release (.pth needs torch installed; .safetensors/.npz/.pdparams
    # with the official names do not)
    python ldm_uvit/convert_official_uvit.py --model_weights mscoco_uvit_small_deep.pth \\
        --output_dir outputs/uvit_mscoco_small_deep
    # U-ViT-S/2 (12 layers): same sizes except the depth, taken from the weights
    python ldm_uvit/convert_official_uvit.py --model_weights mscoco_uvit_small.pth \\
        --output_dir outputs/uvit_mscoco_small --fit_config_to_weights
    python ldm_uvit/generate_pipelines.py --model_file outputs/uvit_mscoco_small_deep/model_state.pdparams \\
        --use_ema False --output_path outputs/uvit_mscoco_small_deep/pipeline \\
        --vae_name_or_path runwayml/stable-diffusion-v1-5/vae \\
        --text_encoder_name_or_path runwayml/stable-diffusion-v1-5/text_encoder \\
        --tokenizer_name_or_path runwayml/stable-diffusion-v1-5/tokenizer
    python ldm_uvit/infer.py --model_name_or_path outputs/uvit_mscoco_small_deep/pipeline --prompt "a bus on a street"

An official checkpoint is a plain state dict of the U-ViT (``nnet.pth`` / ``nnet_ema.pth`` of a
training run; the released ``mscoco_uvit_small*.pth``).  It is read with
``common.weights.read_state_dict`` (a ``.pth`` is opened weights-only).  The output folder holds:

``model_state.pdparams``
    ``{"unet.<name>": float32 tensor}``, the Trainer layout that ``generate_pipelines.py`` reads.
``unet_config.json``
    the ppdiffusers ``UViTT2IModel`` config (``--unet_config_file``, by default
    ``config/uvit_t2i_small_deep.json``: embed 512 = 8 heads x 64, 16 layers, patch 2, 32x32x4
    latents, 77x768 CLIP features, ``qkv_bias`` false, the official ``mscoco_uvit_small`` sizes
    with ``depth=16``).
``ldm_uvit_args.json``
    the run defaults ``generate_pipelines.py`` reads: ``vae_name_or_path``, ``model_max_length``
    (= ``num_text_tokens``), ``scaling_factor`` (0.23010, the latent scale U-ViT trained with on
    COCO; the exported ``vqvae/config.json`` gets it) and ``converted_from``.

There is no ``ema_state.pdparams``: export with ``--use_ema False`` (convert ``nnet_ema.pth`` to
get the EMA weights of an official training run).

Name mapping (official PyTorch name -> ppdiffusers ``UViTT2IModel`` name; ``D`` embed dim, ``C``
latent channels, ``p`` patch size, ``K`` = ``clip_dim``, ``T`` = ``num_text_tokens``, ``N`` =
``(sample_size / p) ** 2``, ``H`` = ``mlp_ratio * D``; ``<blk>`` is ``in_blocks.<i>`` (``i <
num_layers // 2``), ``mid_block`` or ``out_blocks.<i>``):

=================================================  ====================  ====================  ===========
official name                                      official shape        ppdiffusers shape     conversion
=================================================  ====================  ====================  ===========
``pos_embed``                                      (1, 1 + T + N, D)     same                  copy
``patch_embed.proj.weight`` / ``.bias``            (D, C, p, p) / (D)    same                  copy (conv)
``context_embed.weight`` / ``.bias``               (D, K) / (D)          (K, D) / (D)          transpose
``<blk>.norm1|norm2.weight|bias``                  (D)                   same                  copy
``<blk>.attn.qkv.weight``                          (3D, D)               (D, 3D)               transpose
``<blk>.attn.qkv.bias`` (qkv_bias only)            (3D)                  same                  copy
``<blk>.attn.proj.weight`` / ``.bias``             (D, D) / (D)          (D, D) / (D)          transpose
``<blk>.mlp.fc1.weight`` / ``.bias``               (H, D) / (H)          (D, H) / (H)          transpose
``<blk>.mlp.fc2.weight`` / ``.bias``               (D, H) / (D)          (H, D) / (D)          transpose
``out_blocks.<i>.skip_linear.weight`` / ``.bias``  (D, 2D) / (D)         (2D, D) / (D)         transpose
``norm.weight`` / ``.bias``                        (D)                   same                  copy
``decoder_pred.weight`` / ``.bias``                (p*p*C, D) / (p*p*C)  (D, p*p*C) / (p*p*C)  transpose
``final_layer.weight`` / ``.bias`` (conv only)     (C, C, 3, 3) / (C)    same                  copy (conv)
=================================================  ====================  ====================  ===========

Names are identical; the rule is "every 2-D ``.weight`` is an ``nn.Linear`` weight and is
transposed" (PyTorch stores ``(out, in)``, paddle ``(in, out)``); biases, LayerNorms, convolutions
(same OIHW layout in both) and the position embedding are copied.  The time token needs no
weights: with ``mlp_time_embed=False`` (all MS-COCO configs) the official ``time_embed`` is an
``nn.Identity`` over the same sinusoidal embedding (cos first) that ppdiffusers computes.
Checkpoints with ``time_embed.*`` weights (``mlp_time_embed=True``) or without ``skip_linear``
(``skip=False``) have no ppdiffusers counterpart and are refused.  A ``module.`` prefix (a
DataParallel state dict) is stripped.

Sizes: everything but the head count and the split of ``pos_embed``'s length into text tokens
and patches is read off the tensor shapes and compared with the config; a mismatch fails with
each differing field (``--fit_config_to_weights`` takes the weights' values instead, keeping the
config's ``num_attention_heads`` and ``num_text_tokens``).

Timesteps: official U-ViT feeds the network ``n = t + 1`` (its discrete schedule counts noise
levels 1..1000 where diffusers counts 0..999), while the exported pipeline passes the DDIM
timestep ``t``.  The written ``unet_config.json`` therefore sets ``timestep_offset: 1``, which
``uvit_ldm_unet.LDMUViTT2IModel`` (the pipeline's ``unet/``) adds before embedding, so the
converted network sees the noise level it was trained with.
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse
import json
import math
import re
import shutil

import numpy as np

from common.logging_utils import get_logger

HERE = os.path.dirname(os.path.abspath(__file__))

__all__ = [
    "DEFAULT_UNET_CONFIG",
    "OFFICIAL_SCALE_FACTOR",
    "official_shapes",
    "ppdiffusers_name",
    "infer_sizes",
    "fit_config",
    "convert_state_dict",
    "convert",
]

logger = get_logger("convert_official_uvit")
DEFAULT_UNET_CONFIG = os.path.join(HERE, "config", "uvit_t2i_small_deep.json")
DEFAULT_VAE = "runwayml/stable-diffusion-v1-5/vae"  # U-ViT's autoencoder_kl.pth is Stable Diffusion's KL-f8
OFFICIAL_SCALE_FACTOR = 0.23010  # configs/mscoco_uvit_small.py: autoencoder.scale_factor
UNET_CONFIG_NAME = "unet_config.json"  # = uvit_trainer.UNET_CONFIG_NAME (not imported: that module needs paddle)
RUN_ARGS_NAME = "ldm_uvit_args.json"  # = uvit_trainer.RUN_ARGS_NAME
MODEL_FILE = "model_state.pdparams"
_BLOCK = re.compile(r"^(in_blocks|out_blocks)\.(\d+)\.")


def _embed_dim(config):
    return int(config["num_attention_heads"]) * int(config["attention_head_dim"])


def official_shapes(config):
    """Official (PyTorch) parameter names and shapes of the U-ViT that ``config`` describes.

    Args:
        config: ppdiffusers ``UViTT2IModel`` keyword arguments (a loaded ``unet_config.json``):
            ``sample_size``, ``in_channels``, ``patch_size``, ``num_layers``,
            ``num_attention_heads``, ``attention_head_dim``, ``mlp_ratio``, ``qkv_bias``,
            ``clip_dim``, ``num_text_tokens``, ``conv`` (missing ones take UViTT2IModel's defaults).

    Returns:
        ``{name: shape tuple}`` in the official model's ``state_dict()`` order, PyTorch layout
        (``nn.Linear`` weights ``(out, in)``), for ``mlp_time_embed=False`` and ``skip=True``.
    """
    d = _embed_dim(config)
    c, p = int(config["in_channels"]), int(config.get("patch_size", 2))
    hidden = int(d * float(config.get("mlp_ratio", 4.0)))
    tokens = 1 + int(config["num_text_tokens"]) + (int(config["sample_size"]) // p) ** 2
    shapes = {"pos_embed": (1, tokens, d), "patch_embed.proj.weight": (d, c, p, p), "patch_embed.proj.bias": (d,),
              "context_embed.weight": (d, int(config["clip_dim"])), "context_embed.bias": (d,)}

    def block(prefix, skip):
        shapes.update({f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,), f"{prefix}.attn.qkv.weight": (3 * d, d)})
        if config.get("qkv_bias", False):
            shapes[f"{prefix}.attn.qkv.bias"] = (3 * d,)
        shapes.update({f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,), f"{prefix}.norm2.weight": (d,),
                       f"{prefix}.norm2.bias": (d,), f"{prefix}.mlp.fc1.weight": (hidden, d), f"{prefix}.mlp.fc1.bias": (hidden,),
                       f"{prefix}.mlp.fc2.weight": (d, hidden), f"{prefix}.mlp.fc2.bias": (d,)})
        if skip:
            shapes.update({f"{prefix}.skip_linear.weight": (d, 2 * d), f"{prefix}.skip_linear.bias": (d,)})

    half = int(config.get("num_layers", 28)) // 2
    for i in range(half):
        block(f"in_blocks.{i}", skip=False)
    block("mid_block", skip=False)
    for i in range(half):
        block(f"out_blocks.{i}", skip=True)
    shapes.update({"norm.weight": (d,), "norm.bias": (d,), "decoder_pred.weight": (p * p * c, d), "decoder_pred.bias": (p * p * c,)})
    if config.get("conv", True):
        shapes.update({"final_layer.weight": (c, c, 3, 3), "final_layer.bias": (c,)})
    return shapes


def ppdiffusers_name(official_name, ndim):
    """``(ppdiffusers name, transpose)`` for an official parameter of ``ndim`` dimensions.

    The names are the same; ``transpose`` is True for 2-D ``.weight`` tensors (``nn.Linear``,
    PyTorch ``(out, in)`` -> paddle ``(in, out)``), False for everything else.
    """
    return official_name, bool(ndim == 2 and official_name.endswith(".weight"))


def _strip_module_prefix(state):
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def infer_sizes(state, num_text_tokens):
    """The config fields that the tensor shapes of an official U-ViT state dict determine.

    Args:
        state: ``{official name: numpy array}``.
        num_text_tokens: text tokens (not visible in the weights on its own: ``pos_embed`` holds
            ``1 + num_text_tokens + patches`` positions); used to split ``pos_embed`` and derive
            ``sample_size``.

    Returns:
        dict with the fields it could read, among ``embed_dim``, ``in_channels``, ``out_channels``,
        ``patch_size``, ``clip_dim``, ``num_layers``, ``mlp_ratio``, ``qkv_bias``, ``conv`` and
        ``sample_size`` (absent when the tensors it needs are missing, or, for ``sample_size``,
        when the patch count left over is not a square).
    """
    shape = {k: tuple(np.shape(v)) for k, v in state.items()}
    got = {}
    if len(shape.get("pos_embed", ())) == 3:
        got["embed_dim"] = shape["pos_embed"][2]
    if len(shape.get("patch_embed.proj.weight", ())) == 4:
        d, c, p, _ = shape["patch_embed.proj.weight"]
        got.update(embed_dim=d, in_channels=c, out_channels=c, patch_size=p)
    if len(shape.get("context_embed.weight", ())) == 2:
        got["clip_dim"] = shape["context_embed.weight"][1]
    blocks = {int(m.group(2)) for k in shape for m in [_BLOCK.match(k)] if m and m.group(1) == "in_blocks"}
    if blocks:
        got["num_layers"] = 2 * (max(blocks) + 1)
    fc1 = next((shape[k] for k in ("mid_block.mlp.fc1.weight", "in_blocks.0.mlp.fc1.weight") if k in shape), None)
    if fc1 is not None and len(fc1) == 2 and fc1[1]:
        got["mlp_ratio"] = fc1[0] / fc1[1]
    qkv_keys = [k for k in shape if k.endswith(".attn.qkv.weight")]
    if qkv_keys:
        got["qkv_bias"] = any(k.endswith(".attn.qkv.bias") for k in shape)
    if "decoder_pred.weight" in shape:
        got["conv"] = "final_layer.weight" in shape
    if "patch_size" in got and len(shape.get("pos_embed", ())) == 3:
        patches = shape["pos_embed"][1] - 1 - int(num_text_tokens)
        side = math.isqrt(patches) if patches > 0 else 0
        if side > 0 and side * side == patches:
            got["sample_size"] = side * got["patch_size"]
    return got


def _config_sizes(config):
    return {
        "embed_dim": _embed_dim(config), "in_channels": int(config["in_channels"]),
        "out_channels": int(config.get("out_channels") or config["in_channels"]), "patch_size": int(config.get("patch_size", 2)),
        "clip_dim": int(config["clip_dim"]), "num_layers": 2 * (int(config.get("num_layers", 28)) // 2),
        "mlp_ratio": float(config.get("mlp_ratio", 4.0)), "qkv_bias": bool(config.get("qkv_bias", False)),
        "conv": bool(config.get("conv", True)), "sample_size": int(config["sample_size"]),
    }


def fit_config(state, config, source, fit_to_weights=False, config_name="--unet_config_file"):
    """Check ``config`` against the sizes the weights show (:func:`infer_sizes`); return the config to use.

    Args:
        state: ``{official name: numpy array}``.
        config: ppdiffusers ``UViTT2IModel`` kwargs.
        source: the weight file, for messages.
        fit_to_weights: take the weights' sizes where they differ (``num_attention_heads`` and
            ``num_text_tokens`` stay the config's; the embed dim must be divisible by the heads).
        config_name: what the config came from, for messages.

    Returns:
        a new config dict (``config`` itself is not changed).

    Raises:
        ValueError: a size differs and ``fit_to_weights`` is off (every differing field listed,
            with the weights' value), or the weights cannot be fitted (embed dim not divisible by
            the head count, ``pos_embed`` length that no square patch grid explains).
    """
    seen = infer_sizes(state, config["num_text_tokens"])
    want = _config_sizes(config)
    diff = {k: (want[k], v) for k, v in seen.items() if k in want and (abs(want[k] - v) > 1e-9 if k == "mlp_ratio" else want[k] != v)}
    unsplit = "patch_size" in seen and len(np.shape(state.get("pos_embed", ()))) == 3 and "sample_size" not in seen
    if unsplit:  # pos_embed's length is not 1 + num_text_tokens + a square number of patches
        want_positions = 1 + int(config["num_text_tokens"]) + (want["sample_size"] // want["patch_size"]) ** 2
        diff["pos_embed positions"] = (want_positions, np.shape(state["pos_embed"])[1])
    if not diff:
        return dict(config)
    listed = ", ".join(f"{k}: config {a}, weights {b}" for k, (a, b) in diff.items())
    if not fit_to_weights:
        raise ValueError(f"{source} does not fit {config_name}: {listed}. Pass a --unet_config_file with these sizes, or "
                         f"--fit_config_to_weights to take them from the weights (keeps the config's num_attention_heads="
                         f"{config['num_attention_heads']} and num_text_tokens={config['num_text_tokens']})")
    if unsplit:
        raise ValueError(f"{source}: pos_embed has {np.shape(state['pos_embed'])[1]} positions, which is not 1 + num_text_tokens "
                         f"({config['num_text_tokens']}, from {config_name}) + a square number of patches: set num_text_tokens to the "
                         f"text length the checkpoint was trained with (77 for CLIP features)")
    out = dict(config)
    heads = int(config["num_attention_heads"])
    for key, (_, value) in diff.items():
        if key == "embed_dim":
            if value % heads:
                raise ValueError(f"{source}: embed dim {value} is not divisible by num_attention_heads {heads} of {config_name}")
            out["attention_head_dim"] = value // heads
        else:
            out[key] = value
    logger.warning("%s: config taken from the weights where %s differed: %s", source, config_name, listed)
    return out


def convert_state_dict(state, config, source="--model_weights"):
    """Official U-ViT state dict -> ppdiffusers ``UViTT2IModel`` state dict (numpy, float32).

    Args:
        state: ``{official name: array}`` (a plain ``nnet.pth`` state dict, e.g. from
            ``common.weights.read_state_dict``); a ``module.`` prefix on every key is stripped.
        config: the ppdiffusers config the weights must fit (see :func:`official_shapes`).
        source: the file, for messages.

    Returns:
        ``{ppdiffusers name: float32 array}``, 2-D Linear weights transposed to ``(in, out)``.

    Raises:
        ValueError: ``time_embed.*`` weights (``mlp_time_embed=True``) or out-block
            ``skip_linear`` missing (``skip=False``), which UViTT2IModel cannot hold; or missing,
            unexpected or mis-shaped keys against :func:`official_shapes` (each list in the message).
    """
    state = _strip_module_prefix(dict(state))
    time_mlp = sorted(k for k in state if k.startswith("time_embed."))
    if time_mlp:
        raise ValueError(f"{source}: has {time_mlp} (a U-ViT with mlp_time_embed=True); ppdiffusers' UViTT2IModel uses the bare "
                         "sinusoidal time token, so only mlp_time_embed=False checkpoints (the MS-COCO ones) convert")
    if any(k.startswith("out_blocks.") for k in state) and not any(".skip_linear." in k for k in state):
        raise ValueError(f"{source}: out_blocks have no skip_linear (a U-ViT with skip=False); UViTT2IModel always has the long skips")
    expected = official_shapes(config)
    missing = [k for k in expected if k not in state]
    unexpected = sorted(k for k in state if k not in expected)
    wrong = [f"{k}: {tuple(np.shape(state[k]))} vs {expected[k]}" for k in expected if k in state and tuple(np.shape(state[k])) != expected[k]]
    if missing or unexpected or wrong:
        raise ValueError(f"{source}: not an official U-ViT (uvit_t2i) state dict of this config: {len(missing)} missing {missing[:8]}, "
                         f"{len(unexpected)} unexpected {unexpected[:8]}, {len(wrong)} wrong shapes {wrong[:8]}")
    out = {}
    for name in expected:
        value = np.asarray(state[name], dtype=np.float32)
        target, transpose = ppdiffusers_name(name, value.ndim)
        out[target] = np.ascontiguousarray(value.T) if transpose else value
    return out


def _load_config(path):
    if not os.path.isfile(path):
        alt = os.path.join(HERE, path)
        if not os.path.isfile(alt):
            raise FileNotFoundError(f"--unet_config_file {path!r} not found (also looked in {HERE})")
        path = alt
    with open(path) as f:
        raw = json.load(f)
    missing = [k for k in ("sample_size", "in_channels", "clip_dim", "num_text_tokens", "num_attention_heads", "attention_head_dim") if k not in raw]
    if missing:
        raise ValueError(f"--unet_config_file {path!r} lacks {missing}")
    return raw


def convert(model_weights, output_dir, unet_config_file=DEFAULT_UNET_CONFIG, vae_name_or_path=DEFAULT_VAE,
            scaling_factor=OFFICIAL_SCALE_FACTOR, fit_config_to_weights=False, overwrite=False):
    """Write the model folder for an official U-ViT checkpoint (see the module docstring).

    Args:
        model_weights: ``nnet.pth`` / ``nnet_ema.pth`` (needs torch), or the same state dict as
            ``.safetensors`` / ``.npz`` / ``.pdparams`` under the official names.
        output_dir: folder to write (written to a temporary folder, then moved into place).
        unet_config_file: ppdiffusers UViTT2IModel config JSON (relative paths also tried under ldm_uvit/).
        vae_name_or_path: autoencoder recorded for ``generate_pipelines.py`` (not loaded here).
        scaling_factor: latent scale factor the checkpoint was trained with, recorded for export.
        fit_config_to_weights: see :func:`fit_config`.
        overwrite: replace an existing non-empty ``output_dir``.

    Returns:
        ``output_dir``.

    Raises:
        FileExistsError: ``output_dir`` exists, is not empty, and ``overwrite`` is off.
        FileNotFoundError / ImportError / ValueError: from reading the file (``--model_weights``),
            the config (``--unet_config_file``), :func:`fit_config` and :func:`convert_state_dict`.
    """
    import paddle
    from ppdiffusers import UViTT2IModel  # LDMUViTT2IModel (uvit_ldm_unet.py) has the same parameters

    from common.checkpoint import replace_dir
    from common.weights import load_state_dict_strict, read_state_dict, unwrap_state_dict

    out = os.path.abspath(output_dir)
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"--output_dir {output_dir!r} exists and is not empty (pass --overwrite to replace it)")
    raw_config = _load_config(unet_config_file)
    config = {k: v for k, v in raw_config.items() if not k.startswith("_")}
    state = unwrap_state_dict(read_state_dict(model_weights, "--model_weights"))
    if not isinstance(state, dict) or not state or any(isinstance(v, dict) for v in state.values()):
        raise ValueError(f"--model_weights {model_weights!r}: expected a flat state dict of the U-ViT (nnet.pth), got keys {sorted(state)[:8]}")
    state = _strip_module_prefix(state)
    config = fit_config(state, config, f"--model_weights {model_weights!r}", fit_config_to_weights)
    weights = convert_state_dict(state, config, f"--model_weights {model_weights!r}")

    unet = UViTT2IModel(**config)  # the strict load also checks the table against the real model
    load_state_dict_strict(unet, weights, f"--model_weights {model_weights!r}")
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        paddle.save({f"unet.{k}": v for k, v in unet.state_dict().items()}, os.path.join(tmp, MODEL_FILE))
        with open(os.path.join(tmp, UNET_CONFIG_NAME), "w") as f:
            # official U-ViT embeds n = t + 1 (uvit_ldm_unet.LDMUViTT2IModel adds the offset at sampling)
            json.dump({"_class_name": raw_config.get("_class_name", "UViTT2IModel"), **config, "timestep_offset": 1}, f, indent=2)
        run_args = {"vae_name_or_path": vae_name_or_path, "model_max_length": int(config["num_text_tokens"]),
                    "scaling_factor": float(scaling_factor), "converted_from": os.path.abspath(model_weights)}
        with open(os.path.join(tmp, RUN_ARGS_NAME), "w") as f:
            json.dump(run_args, f, indent=2)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n_params = sum(int(np.prod(v.shape)) for v in weights.values())
    logger.info("%s -> %s: %d tensors (%.2fM parameters), %d layers, embed %d; export with generate_pipelines.py --model_file %s --use_ema False",
                model_weights, out, len(weights), n_params / 1e6, config["num_layers"], _embed_dim(config), os.path.join(out, MODEL_FILE))
    return output_dir


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Convert an official U-ViT (uvit_t2i) nnet.pth into an ldm_uvit model folder.")
    p.add_argument("--model_weights", required=True, help="official nnet.pth / nnet_ema.pth (.pth needs torch; .safetensors/.npz/.pdparams too)")
    p.add_argument("--output_dir", required=True, help="model folder to write (model_state.pdparams, unet_config.json, ldm_uvit_args.json)")
    p.add_argument("--unet_config_file", default=DEFAULT_UNET_CONFIG, help="UViTT2IModel config (default: U-ViT-S/2 deep, MS-COCO)")
    p.add_argument("--fit_config_to_weights", action="store_true", help="take the sizes the weights show where the config differs (heads and text length stay)")
    p.add_argument("--vae_name_or_path", default=DEFAULT_VAE, help="autoencoder recorded for generate_pipelines.py (the SD KL-f8 VAE for U-ViT's COCO models)")
    p.add_argument("--scaling_factor", type=float, default=OFFICIAL_SCALE_FACTOR, help="latent scale the checkpoint was trained with (U-ViT COCO: 0.23010)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    convert(args.model_weights, args.output_dir, args.unet_config_file, args.vae_name_or_path, args.scaling_factor,
            args.fit_config_to_weights, args.overwrite)


if __name__ == "__main__":
    main()
