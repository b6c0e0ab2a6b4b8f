"""Building the AutoencoderKL to train (from a JSON config, a pretrained folder / hub id, or a
mix: pretrained encoder + new decoder), and small helpers the training loop needs.  (Optimizer
state is saved with :func:`common.checkpoint.optimizer_state`, like every plain loop.)"""
import os
import warnings

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

__all__ = ["read_vae_config", "pin_encoder_channels", "filter_state_dict", "build_vae", "VAEWithPosterior", "resize_to"]


def read_vae_config(path):
    """Read an AutoencoderKL JSON config (the ``config.json`` format ``from_config`` takes).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not valid JSON or not an object.
    """
    from common.arg_checks import read_json_config

    return pin_encoder_channels(read_json_config(path, "--vae_config_file"))


def pin_encoder_channels(config):
    """Write the encoder widths into ``down_block_out_channels`` when a config has separate
    decoder widths (``up_block_out_channels``) but leaves the encoder's implicit.

    ppdiffusers' AutoencoderKL stores the *decoder* widths as ``block_out_channels`` in the
    config it saves, so such a model would reload with a wrong encoder; pinning the encoder
    widths explicitly makes ``save_pretrained`` -> ``from_pretrained`` round-trip.
    """
    config = dict(config)
    if config.get("up_block_out_channels") and not config.get("down_block_out_channels"):
        config["down_block_out_channels"] = list(config.get("block_out_channels", (64,)))
    return config


def filter_state_dict(state_dict, ignore_keys):
    """Drop every key that starts with one of the ``ignore_keys`` prefixes; returns ``(kept, dropped)``."""
    prefixes = tuple(ignore_keys or ())
    kept = {k: v for k, v in state_dict.items() if not (prefixes and k.startswith(prefixes))}
    return kept, sorted(set(state_dict) - set(kept))


def _load_pretrained_state(name_or_path):
    """State dict of a pretrained AutoencoderKL (local folder, pipeline folder or hub id)."""
    from ppdiffusers import AutoencoderKL

    if os.path.isfile(os.path.join(name_or_path, "config.json")):
        subfolder = None
    elif os.path.isdir(os.path.join(name_or_path, "vae")):
        subfolder = "vae"
    elif name_or_path.startswith((".", "/")) or os.path.exists(name_or_path):
        raise FileNotFoundError(f"--pretrained_model_name_or_path {name_or_path!r} is neither an AutoencoderKL folder (config.json) nor a pipeline folder with vae/")
    else:
        subfolder = "vae" if name_or_path.count("/") == 1 else None  # hub pipeline id (needs a network)
    model = AutoencoderKL.from_pretrained(name_or_path, subfolder=subfolder)
    return model.config, model.state_dict()


def build_vae(pretrained_model_name_or_path=None, vae_config_file=None, from_scratch=False, ignore_keys=(), init_from_ckpt=None, logger=None):
    """Create the AutoencoderKL to train.

    * ``from_scratch``: random init from ``vae_config_file`` (required).
    * otherwise: architecture from ``vae_config_file`` if given, else the pretrained model's
      config; weights from ``pretrained_model_name_or_path`` minus keys starting with any of
      ``ignore_keys`` (e.g. ``decoder.``), and only where the shapes match -- the rest keeps
      its random init (logged).
    * ``init_from_ckpt``: afterwards load a state dict file (``.pdparams``) on top (e.g. a
      converted checkpoint); ``ignore_keys`` applies to it too.

    Returns ``(vae, info)`` where ``info`` = ``{"loaded": [...], "ignored": [...], "random": [...]}``.

    Raises:
        ValueError: ``from_scratch`` without ``vae_config_file``, or neither a config nor a
            pretrained model given.
        FileNotFoundError: a path that does not exist.
    """
    from ppdiffusers import AutoencoderKL

    info = {"loaded": [], "ignored": [], "random": []}
    if from_scratch:
        if not vae_config_file:
            raise ValueError("--from_scratch needs --vae_config_file (the architecture to build)")
        vae = AutoencoderKL.from_config(read_vae_config(vae_config_file))
        info["random"] = list(vae.state_dict())
    else:
        if not pretrained_model_name_or_path:
            raise ValueError("give --pretrained_model_name_or_path (warm start) or --from_scratch with --vae_config_file")
        pre_config, pre_state = _load_pretrained_state(pretrained_model_name_or_path)
        config = read_vae_config(vae_config_file) if vae_config_file else pin_encoder_channels(pre_config)
        vae = AutoencoderKL.from_config(config)
        info = _load_into(vae, pre_state, ignore_keys)
    if init_from_ckpt:
        if not os.path.isfile(init_from_ckpt):
            raise FileNotFoundError(f"--init_from_ckpt {init_from_ckpt!r} does not exist")
        state = paddle.load(init_from_ckpt)
        extra = _load_into(vae, state, ignore_keys)
        info["loaded"] = sorted(set(info["loaded"]) | set(extra["loaded"]))
        info["random"] = sorted(set(info["random"]) - set(extra["loaded"]))
    if logger is not None:
        logger.info("VAE weights: %d tensors loaded, %d ignored by --ignore_keys, %d randomly initialised%s", len(info["loaded"]), len(info["ignored"]),
                    len(info["random"]), f" (e.g. {info['random'][:6]})" if info["random"] else "")
    return vae, info


def _load_into(model, state, ignore_keys):
    kept, ignored = filter_state_dict(state, ignore_keys)
    own = model.state_dict()
    usable = {k: v for k, v in kept.items() if k in own and list(v.shape) == list(own[k].shape)}
    with warnings.catch_warnings():  # paddle warns once per key left out on purpose
        warnings.simplefilter("ignore")
        model.set_state_dict(usable)
    return {"loaded": sorted(usable), "ignored": ignored, "random": sorted(set(own) - set(usable))}


def resize_to(x, size):
    """Resize ``(B, C, H, W)`` images to ``size = (h, w)``: area averaging when shrinking (no
    aliasing), bicubic when enlarging; returns ``x`` unchanged when already that size."""
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (h, w):
        return x
    mode = "area" if h <= x.shape[-2] and w <= x.shape[-1] else "bicubic"
    return F.interpolate(x, size=[h, w], mode=mode, align_corners=False)


class VAEWithPosterior(nn.Layer):
    """``forward(x)``: encode ``(B, 3, H, W)`` in ``[-1, 1]``, sample (or take the mode of) the
    posterior, decode.  Returns ``(reconstruction (B, 3, H', W'), mean, logvar)`` with
    ``mean``/``logvar`` ``(B, z, H/f_enc, W/f_enc)``; ``H' = H * f_dec / f_enc``."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x, sample_posterior=True):
        dist = self.vae.encode(x).latent_dist
        z = dist.sample() if sample_posterior else dist.mode()
        return self.vae.decode(z).sample, dist.mean, dist.logvar
