"""Convert a latent-diffusion / CompVis ``AutoencoderKL`` checkpoint (e.g. ``kl-f8.ckpt``) into a
ppdiffusers ``AutoencoderKL`` folder (``config.json`` + weights) that ``from_pretrained`` loads.

Accepted inputs (``--checkpoint_path``):

* ``.ckpt`` / ``.pt`` / ``.pth`` -- a PyTorch pickle (``{"state_dict": ...}`` or a bare state
  dict); needs ``torch`` importable (it is not a dependency of this project).  Pickles can run
  code: they are opened weights-only, and Lightning 1.x ``.ckpt`` files (pickled callbacks) with
  an allow-list unpickler (:mod:`common.weights`);
* ``.safetensors`` -- read without torch, fp32/fp16/bf16 (cast to float32);
* ``.npz`` -- a numpy archive of arrays keyed by parameter name;
* ``.pdparams`` -- a paddle state dict with CompVis key names.

The architecture (channel multipliers, blocks per level, latent channels; encoder and decoder
separately, so an f8-encoder/f16-decoder checkpoint converts too) is read off the tensor
shapes; ``--vae_config_file`` overrides it.  Keys of the training loss (``loss.*``:
discriminator, LPIPS, logvar) are dropped.

Key mapping (CompVis -> ppdiffusers):
  ``{enc,dec}oder.conv_in / conv_out``           -> same names
  ``encoder.down.{i}.block.{j}``                 -> ``encoder.down_blocks.{i}.resnets.{j}``
  ``encoder.down.{i}.downsample.conv``           -> ``encoder.down_blocks.{i}.downsamplers.0.conv``
  ``decoder.up.{i}.block.{j}``                   -> ``decoder.up_blocks.{n-1-i}.resnets.{j}``
  ``decoder.up.{i}.upsample.conv``               -> ``decoder.up_blocks.{n-1-i}.upsamplers.0.conv``
  ``*.nin_shortcut``                             -> ``*.conv_shortcut``
  ``*.mid.block_1 / block_2``                    -> ``*.mid_block.resnets.0 / 1``
  ``*.mid.attn_1.norm / q / k / v / proj_out``   -> ``*.mid_block.attentions.0.group_norm / to_q / to_k / to_v / to_out.0``
  ``encoder.down.{i}.attn.{j}.*`` (kl-f16/f32)   -> ``encoder.down_blocks.{i}.attentions.{j}.*`` (``AttnDownEncoderBlock2D``)
  ``decoder.up.{i}.attn.{j}.*``                  -> ``decoder.up_blocks.{n-1-i}.attentions.{j}.*`` (``AttnUpDecoderBlock2D``)
  ``*.norm_out``                                 -> ``*.conv_norm_out``
  ``quant_conv / post_quant_conv``               -> same names
Attention q/k/v/proj_out are 1x1 convs ``(out, in, 1, 1)`` in CompVis and become paddle Linear
weights ``(in, out)`` (squeezed and transposed).
"""
import argparse
import json
import re
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # noqa: E401,E702 -- repo root, for common/
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # autoencoder/, for its vae_*.py modules
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import numpy as np

from common.weights import read_state_dict, unwrap_state_dict

__all__ = ["load_state_dict", "infer_config", "convert_state_dict", "convert"]

_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def load_state_dict(path, use_ema=False):
    """Read a CompVis VAE checkpoint into ``{name: float32 numpy array}`` (formats: see
    :func:`common.weights.read_state_dict`; bf16/fp16 are cast to float32).

    A whole LDM checkpoint keeps only its ``first_stage_model.*`` part.  ``use_ema`` picks the
    ``model_ema.*`` weights of a checkpoint that has them (CompVis stores the EMA with the dots
    removed from the names, ``model_ema.encoderdown0block0conv1weight``, mapped back here).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImportError: a PyTorch pickle without torch installed (message suggests safetensors/npz).
        ValueError: an unknown extension; ``use_ema`` on a file without EMA weights; a file that is
            already in diffusers/ppdiffusers layout (load it with ``from_pretrained``).
    """
    state = unwrap_state_dict(read_state_dict(path, "--checkpoint_path"))
    state = {k: v for k, v in state.items() if hasattr(v, "shape")}
    prefix = "first_stage_model."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.", "encoder.mid_block.")) for k in state):
        raise ValueError(f"--checkpoint_path {path!r} is already in diffusers/ppdiffusers AutoencoderKL layout "
                         "(down_blocks/up_blocks names): nothing to convert, load its folder with AutoencoderKL.from_pretrained")
    ema = {k[len("model_ema."):]: v for k, v in state.items() if k.startswith("model_ema.")}
    state = {k: v for k, v in state.items() if not k.startswith("model_ema.")}
    if use_ema:
        if not ema:
            raise ValueError(f"--use_ema: {path!r} has no model_ema.* weights")
        squashed = {k.replace(".", ""): k for k in state}
        missing = sorted(k for k in set(squashed) - set(ema) if not squashed[k].startswith("loss."))
        if missing:
            raise ValueError(f"--use_ema: {path!r} model_ema lacks {len(missing)} weights, e.g. {[squashed[m] for m in missing[:5]]}")
        state = {squashed[k]: v for k, v in ema.items() if k in squashed}
    return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}


def _levels(state, side, name):
    return sorted({int(m.group(1)) for k in state for m in [re.match(rf"{side}\.{name}\.(\d+)\.", k)] if m})


def _blocks(state, side, name, level):
    return sorted({int(m.group(1)) for k in state for m in [re.match(rf"{side}\.{name}\.{level}\.block\.(\d+)\.", k)] if m})


def infer_config(state, norm_num_groups=32, scaling_factor=0.18215):
    """Build an AutoencoderKL config dict from CompVis tensor shapes.

    Raises:
        ValueError: the state dict does not look like a CompVis AutoencoderKL (names the key).
    """
    for key in ("encoder.conv_in.weight", "decoder.conv_in.weight", "post_quant_conv.weight", "decoder.conv_out.weight"):
        if key not in state:
            raise ValueError(f"not a CompVis AutoencoderKL state dict: {key!r} missing")
    down = _levels(state, "encoder", "down")
    up = _levels(state, "decoder", "up")
    enc_ch = [int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in down]
    dec_ch = [int(state[f"decoder.up.{i}.block.0.conv1.weight"].shape[0]) for i in up]  # up.0 = highest resolution
    layers = len(_blocks(state, "encoder", "down", down[0]))
    dec_layers = len(_blocks(state, "decoder", "up", up[0]))
    if dec_layers != layers + 1:
        raise ValueError(f"decoder has {dec_layers} blocks per level and encoder {layers}; AutoencoderKL needs decoder = encoder + 1")
    config = {
        "_class_name": "AutoencoderKL",
        "in_channels": int(state["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(state["decoder.conv_out.weight"].shape[0]),
        # CompVis puts an AttnBlock after each resnet of the levels in attn_resolutions (kl-f16/f32);
        # ppdiffusers' Attn{Down,Up}*Block2D hold the same resnet -> attention sequence
        "down_block_types": ["AttnDownEncoderBlock2D" if f"encoder.down.{i}.attn.0.q.weight" in state else "DownEncoderBlock2D" for i in down],
        "up_block_types": ["AttnUpDecoderBlock2D" if f"decoder.up.{i}.attn.0.q.weight" in state else "UpDecoderBlock2D" for i in reversed(up)],
        "block_out_channels": enc_ch,
        "layers_per_block": layers,
        "act_fn": "silu",
        "latent_channels": int(state["post_quant_conv.weight"].shape[1]),
        "norm_num_groups": norm_num_groups,
        "sample_size": 256,
        "scaling_factor": scaling_factor,
    }
    if dec_ch != enc_ch:  # asymmetric (e.g. f8 encoder / f16 decoder); both pinned, see vae_model.pin_encoder_channels
        config["down_block_out_channels"] = enc_ch
        config["up_block_out_channels"] = dec_ch
    return config


def _map_key(key, num_up):
    if key.startswith("loss."):
        return None
    k = key
    k = re.sub(r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2.", k)
    k = re.sub(r"^encoder\.down\.(\d+)\.downsample\.conv\.", r"encoder.down_blocks.\1.downsamplers.0.conv.", k)
    k = re.sub(r"^encoder\.down\.(\d+)\.attn\.(\d+)\.(norm|q|k|v|proj_out)\.",
               lambda mm: f"encoder.down_blocks.{mm.group(1)}.attentions.{mm.group(2)}.{_ATTN[mm.group(3)]}.", k)
    m = re.match(r"^decoder\.up\.(\d+)\.(.*)$", k)
    if m:
        j = num_up - 1 - int(m.group(1))
        rest = re.sub(r"^block\.(\d+)\.", r"resnets.\1.", m.group(2))
        rest = re.sub(r"^upsample\.conv\.", "upsamplers.0.conv.", rest)
        rest = re.sub(r"^attn\.(\d+)\.(norm|q|k|v|proj_out)\.", lambda mm: f"attentions.{mm.group(1)}.{_ATTN[mm.group(2)]}.", rest)
        k = f"decoder.up_blocks.{j}.{rest}"
    k = re.sub(r"\.mid\.block_(\d)\.", lambda mm: f".mid_block.resnets.{int(mm.group(1)) - 1}.", k)
    k = re.sub(r"\.mid\.attn_1\.(norm|q|k|v|proj_out)\.", lambda mm: f".mid_block.attentions.0.{_ATTN[mm.group(1)]}.", k)
    k = k.replace(".nin_shortcut.", ".conv_shortcut.").replace(".norm_out.", ".conv_norm_out.")
    return k


def convert_state_dict(state):
    """Map CompVis keys/tensors to ppdiffusers ones; returns ``(new_state, dropped_keys)``."""
    num_up = len(_levels(state, "decoder", "up"))
    out, dropped = {}, []
    for key, value in state.items():
        new = _map_key(key, num_up)
        if new is None:
            dropped.append(key)
            continue
        if re.search(r"\.attentions\.\d+\.to_", new) and new.endswith(".weight") and value.ndim == 4:
            value = value[:, :, 0, 0].T  # 1x1 conv (out, in) -> paddle Linear (in, out)
        out[new] = np.ascontiguousarray(value, dtype=np.float32)
    return out, dropped


def convert(vae_checkpoint, dump_path, vae_config_file=None, norm_num_groups=32, scaling_factor=0.18215, use_ema=False):
    """Convert and write a ``save_pretrained`` folder to ``dump_path``.

    Returns ``(missing_keys, unexpected_keys)`` of the load into ``AutoencoderKL`` (both empty
    on success; otherwise a ``ValueError`` lists them).
    """
    import paddle
    from ppdiffusers import AutoencoderKL

    state = load_state_dict(vae_checkpoint, use_ema=use_ema)
    if vae_config_file:
        with open(vae_config_file) as f:
            config = json.load(f)
    else:
        config = infer_config(state, norm_num_groups, scaling_factor)
    new_state, dropped = convert_state_dict(state)
    vae = AutoencoderKL.from_config(config)
    own = vae.state_dict()
    missing = sorted(set(own) - set(new_state))
    unexpected = sorted(set(new_state) - set(own))
    mismatched = sorted(k for k in set(own) & set(new_state) if list(own[k].shape) != list(new_state[k].shape))
    if missing or unexpected or mismatched:
        raise ValueError(f"conversion does not fit AutoencoderKL: missing {missing[:8]}, unexpected {unexpected[:8]}, shape-mismatched {mismatched[:8]}")
    vae.set_state_dict({k: paddle.to_tensor(v) for k, v in new_state.items()})
    vae.save_pretrained(dump_path)
    print(f"wrote {dump_path}: {len(new_state)} tensors, {len(dropped)} loss.* tensors dropped")
    return missing, unexpected


def main():
    parser = argparse.ArgumentParser(description="Convert a CompVis/LDM kl-f8 VAE checkpoint to a ppdiffusers AutoencoderKL folder.")
    parser.add_argument("--checkpoint_path", required=True,
                        help="kl-f8 checkpoint: .safetensors (any float dtype), .npz, .pdparams, or a PyTorch pickle "
                             ".ckpt/.pt/.pth (needs torch; a pickle can run code, so it is opened weights-only, Lightning "
                             ".ckpt files with an allow-list unpickler)")
    parser.add_argument("--use_ema", action="store_true", help="convert the model_ema.* weights of a checkpoint that has them")
    parser.add_argument("--dump_path", required=True, help="output folder (AutoencoderKL.from_pretrained loads it)")
    parser.add_argument("--vae_config_file", default=None, help="AutoencoderKL JSON config; default: inferred from the tensor shapes")
    parser.add_argument("--norm_num_groups", type=int, default=32, help="GroupNorm groups when inferring the config (CompVis uses 32)")
    parser.add_argument("--scaling_factor", type=float, default=0.18215, help="latent scaling factor written into the config")
    args = parser.parse_args()
    convert(args.checkpoint_path, args.dump_path, args.vae_config_file, args.norm_num_groups, args.scaling_factor, args.use_ema)


if __name__ == "__main__":
    main()
