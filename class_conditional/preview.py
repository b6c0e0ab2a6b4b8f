"""What both training scripts write besides checkpoints, in one place so that the paddlenlp Trainer
script and the plain loop agree: the sample grid of one image per class and the final model
folders.

* :class:`PreviewSampler` -- ``--image_logging_steps N`` (> 0): every N optimisation steps, and
  once more at the last step, rank 0 samples one latent per class (classes 0..9 at most) from the
  weights ``final/`` would hold at that step (the EMA weights when EMA is on), decodes them with
  ``--vae_name_or_path`` and writes ``<output_dir>/samples/step-<step>.png``
  (:func:`common.trainer_callbacks.sample_grid_path`).  ``N <= 0``: no grid at all.  DiT samples
  with DDIM, SiT with the ``--sampling_method`` ODE; both ``--num_inference_steps`` steps at
  guidance ``--cfg_scale`` with the run's seed, so successive grids differ only by the weights.
* :func:`save_final_model` -- ``<output_dir>/final/``: the EMA weights (the trained weights when EMA
  is off) as a model folder (:func:`objective.save_model_folder`); with EMA also
  ``<output_dir>/final_raw/``, the trained weights.
"""
import contextlib
import os

from objective import decode_latents, sample_latents, save_model_folder
from common.logging_utils import get_logger
from common.trainer_callbacks import sample_grid_path

__all__ = ["MAX_PREVIEW_CLASSES", "PREVIEW_UPSCALE", "ema_weights", "PreviewSampler", "save_final_model"]

MAX_PREVIEW_CLASSES = 10  # one grid column per class
PREVIEW_UPSCALE = 2  # 32x32 digits are too small to see

logger = get_logger("class_conditional")


@contextlib.contextmanager
def ema_weights(ema, parameters):
    """Inside the block ``parameters`` hold the EMA weights of ``ema`` (a ppdiffusers ``EMAModel``);
    the trained weights are put back on exit, also after an error.  ``ema=None``: nothing changes."""
    if ema is None:
        yield
        return
    parameters = list(parameters)
    ema.store(parameters)
    ema.copy_to(parameters)
    try:
        yield
    finally:
        ema.restore(parameters)


class PreviewSampler:
    """``sampler(step)`` -> the preview images of one sample per class (a list of float32 arrays
    ``(3, H, W)`` in [-1, 1]), the ``sample_fn`` of :class:`common.trainer_callbacks.ImageLoggingCallback`;
    :meth:`save` writes them as the grid of ``step``.  The model is left as found (train mode,
    trained weights).

    Args:
        transformer: the :class:`models.DiT` being trained.
        cfg: its validated config (``model_type`` picks DDIM or the SiT ODE).
        obj_args: the :class:`objective.ObjectiveArguments` (``num_inference_steps``, ``cfg_scale``,
            ``sampling_method``, ``vae_name_or_path``; the VAE is loaded at the first grid).
        objective: the SiT ``Transport`` (unused for DiT).
        num_classes: classes in the data; the grid shows classes ``0 .. min(10, num_classes) - 1``.
        seed: noise seed of every grid.
        every: the script's ``--image_logging_steps`` (<= 0: never).
        ema: the ``EMAModel`` whose weights are sampled (``None``: the trained weights).
    """

    def __init__(self, transformer, cfg, obj_args, objective, num_classes, seed, every, ema=None):
        self.transformer, self.cfg, self.obj_args, self.objective = transformer, cfg, obj_args, objective
        self.labels = list(range(min(MAX_PREVIEW_CLASSES, num_classes, cfg["num_classes"])))
        self.seed, self.every, self.ema = seed, int(every), ema
        self.vae = None

    def __call__(self, step=None):
        if self.vae is None:
            from common.vae import load_vae

            from common.fast_ops import apply_fast_ops

            self.vae, _ = load_vae(self.obj_args.vae_name_or_path)
            apply_fast_ops(self.vae, getattr(self.obj_args, "fast_ops", True))
        sit = self.cfg["model_type"] == "SiT"
        a = self.obj_args
        with ema_weights(self.ema, self.transformer.parameters()):
            z = sample_latents(self.transformer, self.cfg["model_type"], self.labels, a.num_inference_steps, a.cfg_scale, seed=self.seed,
                               transport=self.objective if sit else None, sampler=a.sampling_method if sit else "ddim")
        return list(decode_latents(self.vae, z).numpy())

    def due(self, step):
        """Whether ``--image_logging_steps`` asks for the grid of ``step``."""
        return self.every > 0 and step % self.every == 0

    def save(self, output_dir, step):
        """Sample and write the grid of ``step`` (call on rank 0); returns its path."""
        from common.images import save_grid

        path = save_grid(self(step), sample_grid_path(output_dir, step), nrow=len(self.labels), upscale=PREVIEW_UPSCALE)
        logger.info("step %d: sample grid -> %s", step, path)
        return path

    def save_last(self, output_dir, step):
        """At the end of training: the grid of the last step, unless ``--image_logging_steps`` is
        <= 0 or the periodic grid of that step exists already.  Returns its path or ``None``."""
        if self.every <= 0 or self.due(step):
            return None
        return self.save(output_dir, step)


def save_final_model(transformer, cfg, output_dir, ema=None):
    """Write ``<output_dir>/final/`` (EMA weights; the trained ones when ``ema`` is ``None``) and,
    with EMA, ``<output_dir>/final_raw/`` (trained weights).  Call on rank 0.  Returns the path of
    ``final/``."""
    final = os.path.join(output_dir, "final")
    if ema is not None:
        save_model_folder(transformer, cfg, os.path.join(output_dir, "final_raw"))
    with ema_weights(ema, transformer.parameters()):
        save_model_folder(transformer, cfg, final)
    logger.info("saved the %s weights to %s%s", "EMA" if ema is not None else "trained", final,
                f" (trained weights: {os.path.join(output_dir, 'final_raw')})" if ema is not None else "")
    return final
