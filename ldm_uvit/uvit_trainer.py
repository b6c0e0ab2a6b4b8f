"""Model building and paddlenlp-Trainer pieces for train_txt2img_uvit_coco_trainer.py."""
import json
import math
import os
import shutil

import numpy as np
import paddle
import paddle.nn as nn
from paddlenlp.trainer import Trainer, TrainerCallback

from common.logging_utils import get_logger
from common.safe_trainer import SafeTrainerMixin
from uvit_diffusion import make_ddim_scheduler, sample_latents

__all__ = ["HERE", "UNET_CONFIG_NAME", "RUN_ARGS_NAME", "RunInfoCallback", "resolve_config_path", "load_unet_config", "build_unet", "uvit_init_", "UViTTrainer", "VisPromptSampler"]

HERE = os.path.dirname(os.path.abspath(__file__))
UNET_CONFIG_NAME = "unet_config.json"  # copy of --unet_config_file in every checkpoint / output_dir
RUN_ARGS_NAME = "ldm_uvit_args.json"  # model + data arguments of the run, same places
logger = get_logger("ldm_uvit")


def resolve_config_path(path):
    """``path`` as given if it exists, else relative to ldm_uvit/ (so ``config/x.json`` works from any cwd).

    Raises:
        FileNotFoundError: neither exists.
    """
    for candidate in (path, os.path.join(HERE, path)):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"--unet_config_file {path!r} not found (also looked in {HERE})")


def load_unet_config(path):
    """Read a ``UViTT2IModel`` config JSON; keys starting with ``_`` are dropped.

    Raises:
        FileNotFoundError / ValueError: missing file, not valid JSON (the file, line and column
            are named), or missing ``sample_size``/``in_channels``/``clip_dim``/``num_text_tokens``.
    """
    from common.arg_checks import read_json_config

    path = resolve_config_path(path)
    config = {k: v for k, v in read_json_config(path, "--unet_config_file").items() if not k.startswith("_")}
    missing = [k for k in ("sample_size", "in_channels", "clip_dim", "num_text_tokens") if k not in config]
    if missing:
        raise ValueError(f"U-ViT config {path!r} lacks {missing}")
    return config


@paddle.no_grad()
def uvit_init_(unet, std=0.02):
    """U-ViT's initialisation (Bao et al. 2023, reference code ``libs/uvit_t2i.py``): linear
    weights and the position embedding ~ truncated normal(std), biases 0, LayerNorm weight 1 /
    bias 0, and the two convolutions (``patch_embed.proj``, ``final_layer``) with PyTorch's
    default, which the reference code keeps: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (``kaiming_uniform_(a=sqrt(5))``).  ppdiffusers' ``UViTT2IModel`` leaves paddle's defaults
    (Xavier linear, zero position embedding, Kaiming-normal convolutions, whose 2.5x larger patch
    tokens drown the text tokens: on the digit demo they delayed the caption's effect on the
    denoising error from about step 250 to 400).  Returns ``unet``, changed in place."""
    trunc = nn.initializer.TruncatedNormal(std=std)
    for layer in unet.sublayers():
        if isinstance(layer, nn.Linear):
            trunc(layer.weight)
            if layer.bias is not None:
                nn.initializer.Constant(0.0)(layer.bias)
        elif isinstance(layer, nn.LayerNorm):
            nn.initializer.Constant(1.0)(layer.weight)
            nn.initializer.Constant(0.0)(layer.bias)
        elif isinstance(layer, nn.Conv2D):
            bound = 1.0 / math.sqrt(int(np.prod(layer.weight.shape[1:])))  # fan_in = in_channels/groups * kh * kw
            nn.initializer.Uniform(-bound, bound)(layer.weight)
            if layer.bias is not None:
                nn.initializer.Uniform(-bound, bound)(layer.bias)
    trunc(unet.pos_embed)
    return unet


def build_unet(config, cls=None):
    """A freshly initialised U-ViT (``UViTT2IModel`` or ``cls``) from a config dict."""
    if cls is None:
        from ppdiffusers import UViTT2IModel as cls
    return uvit_init_(cls(**config))


class UViTTrainer(SafeTrainerMixin, Trainer):
    """paddlenlp ``Trainer`` with the atomic checkpoints, rotation, NaN/signal guard, exact resume
    and peak memory in the log lines of :class:`common.safe_trainer.SafeTrainerMixin` (keyword
    ``skip_nan_steps``)."""


class RunInfoCallback(TrainerCallback):
    """Write ``unet_config.json`` and ``ldm_uvit_args.json`` (model + data arguments) into every
    ``checkpoint-<step>`` folder (rank 0), so generate_pipelines.py can rebuild the pipeline from
    the checkpoint alone."""

    def __init__(self, unet_config_file, run_args):
        self.unet_config_file, self.run_args = unet_config_file, run_args

    def write(self, folder):
        os.makedirs(folder, exist_ok=True)
        shutil.copyfile(resolve_config_path(self.unet_config_file), os.path.join(folder, UNET_CONFIG_NAME))
        with open(os.path.join(folder, RUN_ARGS_NAME), "w") as f:
            json.dump(self.run_args, f, indent=2)

    def write_checkpoint_files(self, folder, args, state):
        """Called by the Trainer while checkpoint ``folder`` is still being written (rank 0 writes)."""
        if state.is_world_process_zero:
            self.write(folder)


class VisPromptSampler:
    """The ``sample_fn`` of :class:`common.trainer_callbacks.ImageLoggingCallback`: DDIM samples
    of the ``run_vis`` prompts with classifier-free guidance, decoded by the VAE.

    ``sampler(step)`` copies the EMA weights into the U-ViT (when an EMA is given), samples one
    image per prompt with a generator seeded by ``seed`` (the same noise at every step), restores
    the raw weights and train mode, and returns the images as ``[-1, 1]`` float arrays
    ``(3, H, W)``.

    Args:
        unet: the ``UViTT2IModel`` being trained.
        vae: the ``AutoencoderKL`` whose latents it learns; ``scale_factor`` the latent scale.
        contexts: float32 ``(P, L, D)`` prompt features; ``empty_context``: ``(L, D)``.
        num_inference_steps, guidance_scale: DDIM steps and guidance ``w`` (1 = off).
        prediction_type: what the U-ViT predicts (``uvit_diffusion.PREDICTION_TYPES``).
        ema: a ppdiffusers ``EMAModel`` of ``unet``'s parameters, or ``None`` (raw weights).
    """

    def __init__(self, unet, vae, scale_factor, contexts, empty_context, num_inference_steps, guidance_scale,
                 prediction_type="epsilon", ema=None, seed=0):
        self.unet, self.vae, self.scale_factor = unet, vae, scale_factor
        self.contexts, self.empty = contexts, empty_context
        self.steps, self.guidance, self.prediction_type = num_inference_steps, guidance_scale, prediction_type
        self.ema, self.seed = ema, seed

    def __call__(self, step):
        params = list(self.unet.parameters())
        if self.ema is not None:
            self.ema.store(params)
            self.ema.copy_to(params)
        self.unet.eval()
        try:
            generator = paddle.Generator().manual_seed(self.seed)
            latents = sample_latents(
                self.unet, paddle.to_tensor(self.contexts), paddle.to_tensor(self.empty), self.steps, self.guidance,
                generator=generator, scheduler=make_ddim_scheduler(self.prediction_type),
            )
            with paddle.no_grad():
                images = self.vae.decode(latents / self.scale_factor).sample
        finally:
            self.unet.train()
            if self.ema is not None:
                self.ema.restore(params)
        return list(images.astype("float32").numpy())
