"""Convert a latent-diffusion / CompVis ``AutoencoderKL`` checkpoint (e.g. ``kl-f8.ckpt``) into a
ppdiffusers ``AutoencoderKL`` folder (``config.json`` + weights) that ``from_pretrained`` loads.

Accepted inputs (``--checkpoint_path``):

* ``.ckpt`` / ``.pt`` / ``.pth`` -- a PyTorch pickle (``{"state_dict": ...}`` or a bare state
  dict); needs ``torch`` importable (it is not a dependency of this project);
* ``.safetensors`` -- read with the ``safetensors`` package (numpy backend, no torch);
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
  ``*.norm_out``                                 -> ``*.conv_norm_out``
  ``quant_conv / post_quant_conv``               -> same names
Attention q/k/v/proj_out are 1x1 convs ``(out, in, 1, 1)`` in CompVis and become paddle Linear
weights ``(in, out)`` (squeezed and transposed).
"""
import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))  # repo root, for common/
from common.cpu_env import apply_cpu_env  # noqa: E402

apply_cpu_env()  # must run before paddle is imported

import numpy as np  # noqa: E402

__all__ = ["load_state_dict", "infer_config", "convert_state_dict", "convert"]

_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def load_state_dict(path):
    """Read a CompVis VAE checkpoint into ``{name: float32 numpy array}`` (see module docstring).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImportError: a PyTorch pickle without torch installed (message suggests safetensors/npz).
        ValueError: an unknown extension.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--checkpoint_path {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        from safetensors.numpy import load_file

        state = load_file(path)
    elif ext == ".npz":
        with np.load(path) as data:
            state = {k: data[k] for k in data.files}
    elif ext == ".pdparams":
        import paddle

        state = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in paddle.load(path).items()}
    elif ext in (".ckpt", ".pt", ".pth", ".bin"):
        try:
            import torch
        except ImportError:
            raise ImportError(
                f"{path!r} is a PyTorch pickle and reading it needs torch, which is not installed. Install torch, "
                "or convert it to .safetensors / .npz on a machine that has torch"
            ) from None
        obj = torch.load(path, map_location="cpu")
        obj = obj.get("state_dict", obj)
        state = {k: v.float().numpy() for k, v in obj.items() if hasattr(v, "numpy")}
    else:
        raise ValueError(f"--checkpoint_path {path!r}: unknown extension {ext!r}; expected .ckpt/.pt/.pth/.bin, .safetensors, .npz or .pdparams")
    if "state_dict" in state and not hasattr(state["state_dict"], "shape"):
        state = state["state_dict"]
    # some checkpoints carry a "first_stage_model." prefix (a full LDM): keep only the VAE part
    prefix = "first_stage_model."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
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
        "down_block_types": ["DownEncoderBlock2D"] * len(down),
        "up_block_types": ["UpDecoderBlock2D"] * len(up),
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
    m = re.match(r"^decoder\.up\.(\d+)\.(.*)$", k)
    if m:
        j = num_up - 1 - int(m.group(1))
        rest = re.sub(r"^block\.(\d+)\.", r"resnets.\1.", m.group(2))
        rest = re.sub(r"^upsample\.conv\.", "upsamplers.0.conv.", rest)
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
        if ".attentions.0.to_" in new and new.endswith(".weight") and value.ndim == 4:
            value = value[:, :, 0, 0].T  # 1x1 conv (out, in) -> paddle Linear (in, out)
        out[new] = np.ascontiguousarray(value, dtype=np.float32)
    return out, dropped


def convert(vae_checkpoint, dump_path, vae_config_file=None, norm_num_groups=32, scaling_factor=0.18215):
    """Convert and write a ``save_pretrained`` folder to ``dump_path``.

    Returns ``(missing_keys, unexpected_keys)`` of the load into ``AutoencoderKL`` (both empty
    on success; otherwise a ``ValueError`` lists them).
    """
    import paddle
    from ppdiffusers import AutoencoderKL

    state = load_state_dict(vae_checkpoint)
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
    parser.add_argument("--checkpoint_path", required=True, help="kl-f8 checkpoint: .ckpt/.pt (needs torch), .safetensors, .npz or .pdparams")
    parser.add_argument("--dump_path", required=True, help="output folder (AutoencoderKL.from_pretrained loads it)")
    parser.add_argument("--vae_config_file", default=None, help="AutoencoderKL JSON config; default: inferred from the tensor shapes")
    parser.add_argument("--norm_num_groups", type=int, default=32, help="GroupNorm groups when inferring the config (CompVis uses 32)")
    parser.add_argument("--scaling_factor", type=float, default=0.18215, help="latent scaling factor written into the config")
    args = parser.parse_args()
    convert(args.checkpoint_path, args.dump_path, args.vae_config_file, args.norm_num_groups, args.scaling_factor)


if __name__ == "__main__":
    main()
