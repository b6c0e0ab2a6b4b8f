"""Turn a trained U-ViT checkpoint into an ``LDMTextToImagePipeline`` folder.

    python ldm_uvit/generate_pipelines.py --model_file outputs/uvit_demo/checkpoint-400/model_state.pdparams \\
        --output_path outputs/uvit_demo/ldm_uvit_pipelines

writes::

    <output_path>/
        model_index.json
        vqvae/       the autoencoder: a KL autoencoder (AutoencoderKL), not a VQ model; the folder
                     keeps the name LDMTextToImagePipeline (and Hugging Face's
                     CompVis/ldm-text2im-large-256) gives it
        bert/        the frozen text encoder (LDMBertModel, or CLIPTextModel with upstream's encoders)
        unet/        the U-ViT (config.json, weights, uvit_ldm_unet.py: UViTT2IModel with the
                     pipeline's call convention, loaded by ppdiffusers as a custom component);
                     its config has ``latent_size`` and the ``sample_size`` that makes the
                     pipeline's default call give those latents (``export_unet_config``)
        scheduler/   DDIM over the training schedule, with the run's ``prediction_type``
        tokenizer/   BertTokenizer (or CLIPTokenizer)

Defaults come from the training run: ``unet_config.json`` and ``ldm_uvit_args.json`` next to
``--model_file`` give the U-ViT config, the VAE, ``model_max_length``, ``prediction_type`` and the features folder,
whose ``text_encoder/`` (made by extract_features.py) is the default text encoder and
tokenizer.  With ``--use_ema True`` (default) the EMA weights in ``ema_state.pdparams`` next to
the model file are exported.  ``--scaling_factor`` (default: ``scaling_factor`` in
``ldm_uvit_args.json`` when recorded, as ``convert_official_uvit.py`` does, else the VAE's own) is
written into ``vqvae/config.json``; the pipeline decodes latents with ``1 / scaling_factor``.
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse
import json
import shutil

import paddle
from paddlenlp.trainer.argparser import strtobool
from ppdiffusers import LDMTextToImagePipeline
from ppdiffusers.training_utils import EMAModel

from common.checkpoint import replace_dir
from common.logging_utils import get_logger
from common.trainer_callbacks import EMA_STATE_FILE
from common.vae import load_vae
from uvit_diffusion import PREDICTION_TYPES, make_ddim_scheduler
from uvit_features import resolve_vae_name
from uvit_text_encoder import load_text_encoder, load_tokenizer
from uvit_ldm_unet import LDMUViTT2IModel, pipeline_sample_size
from uvit_trainer import RUN_ARGS_NAME, UNET_CONFIG_NAME, load_unet_config

HERE = os.path.dirname(os.path.abspath(__file__))
logger = get_logger("generate_pipelines")
UPSTREAM_DEFAULTS = {
    "unet_config_file": os.path.join(HERE, "config", "uvit_t2i_small_deep.json"),
    "vae_name_or_path": "auto",
    "text_encoder_name_or_path": "runwayml/stable-diffusion-v1-5/text_encoder",
    "tokenizer_name_or_path": "runwayml/stable-diffusion-v1-5/tokenizer",
    "model_max_length": 77,
    "prediction_type": "epsilon",
}


def parse_args():
    parser = argparse.ArgumentParser(description="Export a trained U-ViT as an LDMTextToImagePipeline folder.")
    parser.add_argument("--model_file", default="./model_state.pdparams", help="Trainer model_state.pdparams (or the folder holding it)")
    parser.add_argument("--output_path", default="./ldm_uvit_pipelines", help="pipeline folder to write (replaced atomically)")
    parser.add_argument("--vae_name_or_path", default=None, help="autoencoder (common.vae.load_vae); default: the training run's")
    parser.add_argument("--unet_config_file", default=None, help="U-ViT config; default: unet_config.json next to --model_file")
    parser.add_argument("--text_encoder_name_or_path", default=None, help="text encoder; default: <feature_path>/text_encoder of the training run")
    parser.add_argument("--tokenizer_name_or_path", default=None, help="tokenizer; default: same place as the text encoder")
    parser.add_argument("--model_max_length", type=int, default=None, help="tokenizer length; default: the training run's")
    parser.add_argument("--use_ema", type=strtobool, default=True, help="export the EMA weights (ema_state.pdparams next to --model_file)")
    parser.add_argument("--prediction_type", default=None, choices=PREDICTION_TYPES,
                        help="what the U-ViT predicts, written into scheduler/; default: the training run's, else epsilon")
    parser.add_argument("--scaling_factor", type=float, default=None, help="latent scale the U-ViT was trained with; default: the run's recorded one, else the VAE's")
    return parser.parse_args()


def resolve_defaults(args, model_dir):
    """Fill unset arguments from the run files next to the model, else upstream's defaults."""
    run = {}
    run_file = os.path.join(model_dir, RUN_ARGS_NAME)
    if os.path.isfile(run_file):
        with open(run_file) as f:
            run = json.load(f)
    config_file = os.path.join(model_dir, UNET_CONFIG_NAME)
    feature_te = os.path.join(run.get("feature_path", ""), "text_encoder")
    found = {
        "unet_config_file": config_file if os.path.isfile(config_file) else None,
        "vae_name_or_path": run.get("vae_name_or_path"),
        "text_encoder_name_or_path": feature_te if run.get("feature_path") and os.path.isdir(feature_te) else None,
        "model_max_length": run.get("model_max_length"),
        "prediction_type": run.get("prediction_type"),
    }
    found["tokenizer_name_or_path"] = found["text_encoder_name_or_path"]
    if getattr(args, "scaling_factor", None) is None and run.get("scaling_factor") is not None:
        args.scaling_factor = float(run["scaling_factor"])  # recorded by convert_official_uvit.py; training runs use the VAE's
        logger.info("--scaling_factor %s (from %s)", args.scaling_factor, run_file)
    for key, default in UPSTREAM_DEFAULTS.items():
        if getattr(args, key) is None:
            value = found[key] if found.get(key) is not None else default
            setattr(args, key, value)
            logger.info("--%s %s (%s)", key, value, "from the training run" if found.get(key) is not None else "upstream default")
    if args.vae_name_or_path == "auto":  # pin it to the VAE that made the run's features
        args.vae_name_or_path = resolve_vae_name("auto", run.get("feature_path"))
        logger.info("--vae_name_or_path auto -> %s", args.vae_name_or_path)
    return args


def export_unet_config(config, vae_scale_factor):
    """The U-ViT config of the exported ``unet/``: ``config`` (the training config, whose
    ``sample_size`` is the latent side) with ``latent_size`` = that side and ``sample_size`` =
    :func:`uvit_ldm_unet.pipeline_sample_size`, so that ``LDMTextToImagePipeline``'s default
    height (``sample_size * vae_scale_factor``) makes ``height // 8`` = ``latent_size`` latents:
    16 for the f4 demo VAE's 8x8 latents, unchanged (32) for the SD VAE.  A config that already
    has ``latent_size`` is returned as it is.  When no default height fits (``latent_size * 8``
    not a multiple of ``vae_scale_factor``) ``sample_size`` stays the latent side and a warning
    says which height to pass.

    Returns a new dict; ``config`` is not changed.
    """
    if config.get("latent_size"):
        return dict(config)
    latent = config["sample_size"]
    try:
        size = pipeline_sample_size(latent, vae_scale_factor)
    except ValueError as e:
        logger.warning("%s: pass height = width = %d to the pipeline", e, 8 * latent)
        size = latent
    return dict(config, sample_size=size, latent_size=latent)


def load_unet(model_file, config, use_ema):
    """U-ViT with the Trainer weights (``unet.*`` keys) and, when asked and present, the EMA weights.

    Raises:
        ValueError: the state dict does not match the config (missing / unexpected / mis-shaped keys),
            or the EMA state has a different number of parameters.
    """
    unet = LDMUViTT2IModel(**config)
    state = paddle.load(model_file)
    weights = {k[len("unet.") :]: v for k, v in state.items() if k.startswith("unet.")}
    expected = unet.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = [k for k in expected if k in weights and list(weights[k].shape) != list(expected[k].shape)]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{model_file!r} does not match the U-ViT config: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes {shapes[:5]} (pass the --unet_config_file the model was trained with)"
        )
    unet.set_state_dict(weights)
    ema_file = os.path.join(os.path.dirname(model_file), EMA_STATE_FILE)
    if use_ema and os.path.isfile(ema_file):
        params = list(unet.parameters())
        ema_state = paddle.load(ema_file)
        if len(ema_state["shadow_params"]) != len(params):
            raise ValueError(f"{ema_file!r} holds {len(ema_state['shadow_params'])} tensors, the U-ViT has {len(params)} parameters")
        ema = EMAModel(params)
        ema.load_state_dict(ema_state)
        ema.copy_to(params)
        logger.info("U-ViT weights: EMA from %s (step %d)", ema_file, ema.optimization_step)
    else:
        if use_ema:
            logger.warning("no %s next to the model file: exporting the raw (non-EMA) weights", EMA_STATE_FILE)
        logger.info("U-ViT weights: %s", model_file)
    unet.eval()
    return unet


def main():
    args = parse_args()
    model_file = os.path.join(args.model_file, "model_state.pdparams") if os.path.isdir(args.model_file) else args.model_file
    if not os.path.isfile(model_file):
        raise FileNotFoundError(f"--model_file {args.model_file!r}: no model_state.pdparams there")
    args = resolve_defaults(args, os.path.dirname(os.path.abspath(model_file)))

    config = load_unet_config(args.unet_config_file)
    vae, _ = load_vae(args.vae_name_or_path)
    config = export_unet_config(config, 2 ** (len(vae.config.block_out_channels) - 1))
    unet = load_unet(model_file, config, args.use_ema)
    if args.scaling_factor is not None and args.scaling_factor != vae.config.scaling_factor:
        logger.info("VAE scaling_factor %.5f -> %.5f (the latent scale the U-ViT was trained with)", vae.config.scaling_factor, args.scaling_factor)
        vae.register_to_config(scaling_factor=args.scaling_factor)
    text_encoder = load_text_encoder(args.text_encoder_name_or_path)
    tokenizer = load_tokenizer(args.tokenizer_name_or_path, args.model_max_length)
    if text_encoder.config.hidden_size != config["clip_dim"]:
        raise ValueError(f"text encoder width {text_encoder.config.hidden_size} != clip_dim {config['clip_dim']} of the U-ViT config")
    if tokenizer.model_max_length != config["num_text_tokens"]:
        raise ValueError(f"--model_max_length {tokenizer.model_max_length} != num_text_tokens {config['num_text_tokens']} of the U-ViT config")
    if vae.config.latent_channels != config["in_channels"]:
        raise ValueError(f"VAE latent_channels {vae.config.latent_channels} != in_channels {config['in_channels']} of the U-ViT config")

    pipe = LDMTextToImagePipeline(vqvae=vae, bert=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=make_ddim_scheduler(args.prediction_type))
    out = os.path.abspath(args.output_path)
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    shutil.copyfile(os.path.join(HERE, "uvit_ldm_unet.py"), os.path.join(tmp, "unet", "uvit_ldm_unet.py"))
    replace_dir(tmp, out)
    side = config["latent_size"] * pipe.vae_scale_factor
    logger.info(
        "wrote %s (vqvae/ is an AutoencoderKL, scaling_factor %.5f; unet sample_size %d, latent_size %d: pipe(prompt) makes %dx%d latents -> %dx%d images)",
        out, vae.config.scaling_factor, config["sample_size"], config["latent_size"], config["latent_size"], config["latent_size"], side, side,
    )


if __name__ == "__main__":
    main()
