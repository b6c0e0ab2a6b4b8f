"""Denoising objective and sampler for the U-ViT latent diffusion model.

Noise schedule: U-ViT's text-to-image models use Stable Diffusion's discrete DDPM schedule,
1000 steps with betas ``linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2`` (Bao et al. 2023,
"All are Worth Words: A ViT Backbone for Diffusion Models", appendix; Rombach et al. 2022),
which is ppdiffusers' ``scaled_linear`` schedule.  With ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``
training minimises ``E ||target - f_theta(x_t, t, c)||^2`` averaged over latent elements, where
the target is chosen by ``prediction_type`` (ppdiffusers' names):

* ``"epsilon"`` (U-ViT, the default): ``target = eps`` (Ho et al. 2020, eq. 14).
* ``"v_prediction"``: ``target = v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (Salimans & Ho 2022,
  "Progressive Distillation", sec. 4).  Its squared error is the epsilon error divided by
  ``abar_t``, i.e. weighted by ``1 + 1/SNR(t)``: the high-noise steps, where only the caption
  tells which digit to draw, count more.  The demo trains with it (README).

Sampling uses DDIM (Song et al. 2021) with classifier-free guidance ``f = f_u + w (f_c - f_u)``
(Ho & Salimans 2022, eq. 6, applied to the model output as ppdiffusers' pipelines do), the same
math as the exported ``LDMTextToImagePipeline``, whose ``scheduler/`` carries the
``prediction_type``.
"""
import paddle
import paddle.nn as nn
from ppdiffusers import DDIMScheduler, DDPMScheduler
from ppdiffusers.models.vae import DiagonalGaussianDistribution
from ppdiffusers.utils.paddle_utils import randn_tensor

__all__ = ["SCHEDULE", "PREDICTION_TYPES", "check_prediction_type", "make_ddpm_scheduler", "make_ddim_scheduler", "NoisePredictionDiffusion", "UViTLatentDiffusion", "sample_latents"]

SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
PREDICTION_TYPES = ("epsilon", "v_prediction")


def check_prediction_type(prediction_type):
    """``prediction_type`` if it is one of :data:`PREDICTION_TYPES`.

    Raises:
        ValueError: any other value, naming it and the choices.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"--prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}")
    return prediction_type


def make_ddpm_scheduler(prediction_type="epsilon"):
    """The training schedule (see module docstring) for ``prediction_type``.

    Raises:
        ValueError: unknown ``prediction_type`` (:func:`check_prediction_type`).
    """
    return DDPMScheduler(**SCHEDULE, clip_sample=False, prediction_type=check_prediction_type(prediction_type))


def make_ddim_scheduler(prediction_type="epsilon"):
    """DDIM over the training schedule for a model trained with ``prediction_type``; saved as the
    pipeline's ``scheduler/``.

    Raises:
        ValueError: unknown ``prediction_type`` (:func:`check_prediction_type`).
    """
    return DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                         prediction_type=check_prediction_type(prediction_type))


class NoisePredictionDiffusion:
    """DDPM training objective with the project's contract
    ``training_losses(model, x_start, model_kwargs) -> {"loss": ...}``; the target is the
    scheduler's ``prediction_type`` (the noise ``eps`` by default, or ``v``; module docstring).

    ``model(x_t, t, **model_kwargs)`` must return an object with ``.sample`` (the predicted
    target, same shape as ``x_t``).  ``x_start``: float32 latents ``(B, C, h, w)``, already scaled.
    Returns ``{"loss": scalar mean, "mse": (B,) per-sample mean squared error}``.
    Timesteps are uniform in ``[0, 1000)`` and noise is standard normal (paddle's global RNG).
    """

    def __init__(self, scheduler=None):
        self.scheduler = scheduler or make_ddpm_scheduler()
        self.num_timesteps = self.scheduler.config.num_train_timesteps
        self.prediction_type = check_prediction_type(self.scheduler.config.prediction_type)

    def target(self, x_start, noise, t):
        """What the model learns to predict at ``x_t = add_noise(x_start, noise, t)``: ``noise``
        (epsilon) or ``sqrt(abar_t) noise - sqrt(1 - abar_t) x_start`` (v), same shape."""
        if self.prediction_type == "epsilon":
            return noise
        return self.scheduler.get_velocity(x_start, noise, t)

    def training_losses(self, model, x_start, model_kwargs=None):
        b = x_start.shape[0]
        t = paddle.randint(0, self.num_timesteps, [b], dtype="int64")
        noise = paddle.randn(x_start.shape, dtype=x_start.dtype)
        x_t = self.scheduler.add_noise(x_start, noise, t)
        pred = model(x_t, t, **(model_kwargs or {})).sample
        target = self.target(x_start, noise, t)
        mse = (pred.astype("float32") - target.astype("float32")).square().reshape([b, -1]).mean(axis=1)
        return {"loss": mse.mean(), "mse": mse}


class UViTLatentDiffusion(nn.Layer):
    """What the Trainer trains: the U-ViT plus the latent sampling and the objective.

    ``forward(moments, context)``: ``moments`` float32 ``(B, 2*C, h, w)`` (posterior mean and
    logvar), ``context`` float32 ``(B, L, D)``.  A latent ``z ~ N(mean, exp(logvar))`` is drawn
    and multiplied by ``scale_factor`` (the VAE config's ``scaling_factor``), then the
    denoising loss of ``diffusion`` (default: :class:`NoisePredictionDiffusion`, epsilon) is
    returned as ``{"loss": scalar}``.  Only ``unet`` has parameters, so the Trainer's
    ``model_state.pdparams`` holds ``unet.*`` keys.
    """

    def __init__(self, unet, scale_factor, diffusion=None):
        super().__init__()
        self.unet = unet
        self.scale_factor = float(scale_factor)
        self.diffusion = diffusion or NoisePredictionDiffusion()

    def _denoiser(self, x_t, t, context):
        return self.unet(x_t, t, context)

    def forward(self, moments, context):
        x_start = DiagonalGaussianDistribution(moments).sample() * self.scale_factor
        out = self.diffusion.training_losses(self._denoiser, x_start, {"context": context})
        return {"loss": out["loss"]}


@paddle.no_grad()
def sample_latents(unet, context, uncond_context, num_inference_steps=50, guidance_scale=1.0, generator=None, scheduler=None):
    """DDIM sampling with classifier-free guidance; returns scaled latents ``(P, C, s, s)``.
    ``scheduler`` (default :func:`make_ddim_scheduler`) must have the ``prediction_type`` the
    U-ViT was trained with.

    ``context``: ``(P, L, D)`` prompt features; ``uncond_context``: ``(L, D)`` or ``(P, L, D)``
    empty-caption features (used only when ``guidance_scale != 1``).  ``unet`` is a
    ``UViTT2IModel`` (or the exported ``LDMUViTT2IModel``); the latent shape is its
    ``in_channels`` x its patch grid's size (``img_size``, the latent side).
    """
    scheduler = scheduler or make_ddim_scheduler()
    p = context.shape[0]
    h, w = unet.img_size
    latents = randn_tensor([p, unet.config.in_channels, h, w], generator=generator, dtype=context.dtype)
    if guidance_scale != 1.0:
        if uncond_context.ndim == 2:
            uncond_context = uncond_context.unsqueeze(0).expand([p] + list(uncond_context.shape))
        both = paddle.concat([uncond_context, context])
    scheduler.set_timesteps(num_inference_steps)
    for t in scheduler.timesteps:
        if guidance_scale == 1.0:
            out = unet(latents, t, context).sample
        else:
            out_u, out_c = unet(paddle.concat([latents, latents]), t, both).sample.chunk(2)
            out = out_u + guidance_scale * (out_c - out_u)
        latents = scheduler.step(out, t, latents).prev_sample
    return latents
