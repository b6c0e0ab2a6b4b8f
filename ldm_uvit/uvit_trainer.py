"""Model building and paddlenlp-Trainer pieces for train_txt2img_uvit_coco_trainer.py."""
import json
import math
import os
import shutil

import numpy as np
import paddle
import paddle.nn as nn
from paddlenlp.trainer import Trainer, TrainerCallback

from common.images import array_to_pil, make_grid
from common.logging_utils import get_logger, peak_memory_mb
from common.safe_trainer import SafeTrainerMixin
from uvit_diffusion import sample_latents

__all__ = ["HERE", "UNET_CONFIG_NAME", "RUN_ARGS_NAME", "RunInfoCallback", "resolve_config_path", "load_unet_config", "build_unet", "uvit_init_", "UViTTrainer", "SetEpochCallback", "ImageLoggingCallback"]

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
    """U-ViT's initialisation (Bao et al. 2023, reference code): linear weights and the position
    embedding ~ truncated normal(std), biases 0, LayerNorm weight 1 / bias 0.  ppdiffusers'
    ``UViTT2IModel`` leaves paddle's defaults (Xavier linear, zero position embedding)."""
    trunc = nn.initializer.TruncatedNormal(std=std)
    for layer in unet.sublayers():
        if isinstance(layer, nn.Linear):
            trunc(layer.weight)
            if layer.bias is not None:
                nn.initializer.Constant(0.0)(layer.bias)
        elif isinstance(layer, nn.LayerNorm):
            nn.initializer.Constant(1.0)(layer.weight)
            nn.initializer.Constant(0.0)(layer.bias)
    trunc(unet.pos_embed)
    return unet


def build_unet(config, cls=None):
    """A freshly initialised U-ViT (``UViTT2IModel`` or ``cls``) from a config dict."""
    if cls is None:
        from ppdiffusers import UViTT2IModel as cls
    return uvit_init_(cls(**config))


class UViTTrainer(SafeTrainerMixin, Trainer):
    """paddlenlp ``Trainer`` whose log lines also carry the peak memory (MiB), with the atomic
    checkpoints, rotation, NaN/signal guard and exact resume of
    :class:`common.safe_trainer.SafeTrainerMixin` (keyword ``skip_nan_steps``)."""

    def log(self, logs, **kwargs):
        if "loss" in logs:
            logs["peak_mem_mb"] = round(peak_memory_mb(), 1)
        super().log(logs, **kwargs)


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


class SetEpochCallback(TrainerCallback):
    """Tell the dataset the epoch, so its per-sample caption / CFG draws change every epoch."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(math.floor((state.epoch or 0.0) + 1e-6)))


class ImageLoggingCallback(TrainerCallback):
    """Every ``image_logging_steps`` (rank 0): sample the ``run_vis`` prompts with DDIM +
    guidance (EMA weights when an EMA is given), decode with the VAE and write
    ``<output_dir>/image_logs/step-<N>.png`` plus a VisualDL image under ``logging_dir``."""

    def __init__(self, unet, vae, scale_factor, prompts, contexts, empty_context, every, num_inference_steps, guidance_scale, ema=None, seed=0):
        self.unet, self.vae, self.scale_factor = unet, vae, scale_factor
        self.prompts, self.contexts, self.empty = prompts, contexts, empty_context
        self.every, self.steps, self.guidance = every, num_inference_steps, guidance_scale
        self.ema, self.seed, self.writer = ema, seed, None

    def on_step_end(self, args, state, control, **kwargs):
        if not self.every or state.global_step % self.every or not state.is_world_process_zero:
            return
        params = list(self.unet.parameters())
        if self.ema is not None:
            self.ema.store(params)
            self.ema.copy_to(params)
        self.unet.eval()
        try:
            generator = paddle.Generator().manual_seed(self.seed)
            latents = sample_latents(
                self.unet, paddle.to_tensor(self.contexts), paddle.to_tensor(self.empty), self.steps, self.guidance, generator=generator
            )
            with paddle.no_grad():
                images = self.vae.decode(latents / self.scale_factor).sample
        finally:
            self.unet.train()
            if self.ema is not None:
                self.ema.restore(params)
        grid = make_grid([array_to_pil(im) for im in images.numpy()], nrow=min(len(self.prompts), 5))
        folder = os.path.join(args.output_dir, "image_logs")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"step-{state.global_step}.png")
        grid.save(path)
        logger.info("image log (%s) -> %s: %s", "EMA" if self.ema is not None else "raw", path, " | ".join(self.prompts))
        try:
            if self.writer is None:
                from visualdl import LogWriter

                self.writer = LogWriter(logdir=args.logging_dir)
            self.writer.add_image(tag="samples", img=np.asarray(grid), step=state.global_step)
        except ImportError:
            pass

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
