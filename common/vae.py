"""Loading the autoencoder that the latent examples (stable_diffusion, class_conditional,
ldm_uvit) encode images with.

``--vae_name_or_path`` may be a hub id (``CompVis/stable-diffusion-v1-4`` with subfolder
``vae``; needs a network), a local ``save_pretrained`` folder (or a pipeline folder with a
``vae/`` subfolder), or ``random`` for a freshly initialised AutoencoderKL built from
``autoencoder/config/vae_demo.json`` (f4: 32x32 pixels -> 4x8x8 latents), which the
autoencoder demo (``autoencoder/run_train_vae_demo.sh``) trains and saves to
:data:`DEMO_VAE_DIR`.  ``auto`` takes the trained demo VAE; when it has not been trained,
``auto`` is an error that names the command to run -- a random VAE trains fine but decodes to
noise, so it is used only when asked for by name (the tests do).
"""
import json
import os

from common.logging_utils import get_logger

__all__ = ["DEMO_VAE_CONFIG", "DEMO_VAE_DIR", "load_vae", "resolve_vae_name", "vae_downsampling_factor"]

_REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEMO_VAE_CONFIG = os.path.join(_REPO_ROOT, "autoencoder", "config", "vae_demo.json")
DEMO_VAE_DIR = os.path.join(_REPO_ROOT, "outputs", "vae_demo", "final")


def resolve_vae_name(vae_name_or_path="auto"):
    """``auto`` (or empty) -> :data:`DEMO_VAE_DIR` when the autoencoder demo has saved it there;
    any other name is returned unchanged.

    Raises:
        FileNotFoundError: ``auto`` and no trained demo VAE; the message says to run
            ``sh autoencoder/run_train_vae_demo.sh`` (about 5 minutes) or to pass
            ``--vae_name_or_path random`` / a trained VAE folder.
    """
    name = vae_name_or_path or "auto"
    if name != "auto":
        return name
    if os.path.isfile(os.path.join(DEMO_VAE_DIR, "config.json")):
        return DEMO_VAE_DIR
    raise FileNotFoundError(
        f"--vae_name_or_path auto: no trained demo VAE at {DEMO_VAE_DIR}. Train it first with "
        "`sh autoencoder/run_train_vae_demo.sh` (about 5 minutes on 2 cores; the demo launchers do this for you), "
        "or pass --vae_name_or_path <a trained AutoencoderKL folder or hub id>, or `random` for an untrained one "
        "(it trains, but its latents decode to noise: meant for tests)")


def vae_downsampling_factor(vae_name_or_path="auto"):
    """``(factor, source)``: how many pixels one latent pixel of the VAE ``vae_name_or_path``
    spans per side, ``2 ** (levels - 1)`` with ``levels`` the encoder's ``down_block_types``
    (= ``len(block_out_channels)`` unless the decoder differs), read from its config without
    loading weights; ``source`` names the config (for messages).

    Resolves the name like :func:`load_vae` (``auto`` -> the trained demo VAE, see
    :func:`resolve_vae_name`; ``random`` -> ``autoencoder/config/vae_demo.json``, f4).  A name that is not a local folder
    is taken for a hub VAE and assumed f8, like every Stable Diffusion VAE.

    Raises:
        FileNotFoundError: a local-looking path (starts with ``.`` or ``/``) that does not exist;
            ``auto`` without a trained demo VAE.
        ValueError: the local config file is not valid JSON (named).
    """
    from common.arg_checks import read_json_config

    name = resolve_vae_name(vae_name_or_path)
    if name == "random":
        path = DEMO_VAE_CONFIG
    else:
        path = next((p for p in (os.path.join(name, "config.json"), os.path.join(name, "vae", "config.json")) if os.path.isfile(p)), None)
        if path is None and name.startswith((".", "/")) and not os.path.exists(name):
            raise FileNotFoundError(f"--vae_name_or_path {name!r} does not exist")
        if path is None:
            return 8, f"{name!r} (not a local folder: assumed f8 like the Stable Diffusion VAEs)"
    config = read_json_config(path, "VAE config")
    factor = 2 ** (len(config.get("down_block_types") or config.get("block_out_channels") or (64,)) - 1)
    shown = os.path.relpath(path, _REPO_ROOT) if os.path.abspath(path).startswith(_REPO_ROOT + os.sep) else path
    return factor, f"{vae_name_or_path or 'auto'!r} ({shown})"


def load_vae(vae_name_or_path="auto", seed=0):
    """Return ``(vae, description)`` for ``vae_name_or_path`` (see module docstring).

    The VAE is in eval mode with gradients off (``stop_gradient`` on every parameter).
    ``description`` says what was loaded ("trained demo VAE at ...", "randomly initialised ...")
    and is logged, so a run's log tells which autoencoder made its latents.

    Raises:
        FileNotFoundError: a local-looking path (starts with ``.`` or ``/``) that does not exist;
            ``auto`` without a trained demo VAE (see :func:`resolve_vae_name`).
    """
    import paddle
    from ppdiffusers import AutoencoderKL

    logger = get_logger("vae")
    name = resolve_vae_name(vae_name_or_path)
    if name == "random":
        with open(DEMO_VAE_CONFIG) as f:
            config = json.load(f)
        state = paddle.get_rng_state()
        paddle.seed(seed)
        vae = AutoencoderKL.from_config(config)
        paddle.set_rng_state(state)
        description = (f"randomly initialised AutoencoderKL from {os.path.relpath(DEMO_VAE_CONFIG, _REPO_ROOT)} (seed {seed}), as asked: "
                       "its latents decode to noise; train one with autoencoder/run_train_vae_demo.sh")
    else:
        if name.startswith((".", "/")) and not os.path.exists(name):
            raise FileNotFoundError(f"--vae_name_or_path {name!r} does not exist")
        if os.path.isfile(os.path.join(name, "config.json")):
            subfolder = None  # a save_pretrained VAE folder
        elif os.path.isdir(os.path.join(name, "vae")):
            subfolder = "vae"  # a full pipeline folder
        else:
            subfolder = "vae" if name.count("/") == 1 else None  # hub pipeline id vs ".../vae" id
        vae = AutoencoderKL.from_pretrained(name, subfolder=subfolder)
        description = f"AutoencoderKL from {name}" + (f" (subfolder {subfolder})" if subfolder else "")
    vae.eval()
    for p in vae.parameters():
        p.stop_gradient = True
    logger.info("VAE: %s", description)
    return vae, description
