"""Noise-prediction objective and sampler for the U-ViT latent diffusion model.

Noise schedule: U-ViT's text-to-image models use Stable Diffusion's discrete DDPM schedule,
1000 steps with betas ``linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2`` (Bao et al. 2023,
"All are Worth Words: A ViT Backbone for Diffusion Models", appendix; Rombach et al. 2022),
which is ppdiffusers' ``scaled_linear`` schedule.  Training minimises
``E ||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, c)||^2`` (Ho et al. 2020, eq. 14),
averaged over latent elements.  Sampling uses DDIM (Song et al. 2021) with classifier-free
guidance ``eps = eps_u + w (eps_c - eps_u)`` (Ho & Salimans 2022, eq. 6), the same math as the
exported ``LDMTextToImagePipeline``.
"""
import paddle
import paddle.nn as nn
from ppdiffusers import DDIMScheduler, DDPMScheduler
from ppdiffusers.models.vae import DiagonalGaussianDistribution
from ppdiffusers.utils.paddle_utils import randn_tensor

__all__ = ["SCHEDULE", "make_ddpm_scheduler", "make_ddim_scheduler", "NoisePredictionDiffusion", "UViTLatentDiffusion", "sample_latents"]

SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def make_ddpm_scheduler():
    """The training schedule (see module docstring)."""
    return DDPMScheduler(**SCHEDULE, clip_sample=False)


def make_ddim_scheduler():
    """DDIM over the training schedule; saved as the pipeline's ``scheduler/``."""
    return DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


class NoisePredictionDiffusion:
    """Epsilon-prediction DDPM objective with the project's contract
    ``training_losses(model, x_start, model_kwargs) -> {"loss": ...}``.

    ``model(x_t, t, **model_kwargs)`` must return an object with ``.sample`` (predicted noise,
    same shape as ``x_t``).  ``x_start``: float32 latents ``(B, C, h, w)``, already scaled.
    Returns ``{"loss": scalar mean, "mse": (B,) per-sample mean squared error}``.
    Timesteps are uniform in ``[0, 1000)`` and noise is standard normal (paddle's global RNG).
    """

    def __init__(self, scheduler=None):
        self.scheduler = scheduler or make_ddpm_scheduler()
        self.num_timesteps = self.scheduler.config.num_train_timesteps

    def training_losses(self, model, x_start, model_kwargs=None):
        b = x_start.shape[0]
        t = paddle.randint(0, self.num_timesteps, [b], dtype="int64")
        noise = paddle.randn(x_start.shape, dtype=x_start.dtype)
        x_t = self.scheduler.add_noise(x_start, noise, t)
        pred = model(x_t, t, **(model_kwargs or {})).sample
        mse = (pred.astype("float32") - noise.astype("float32")).square().reshape([b, -1]).mean(axis=1)
        return {"loss": mse.mean(), "mse": mse}


class UViTLatentDiffusion(nn.Layer):
    """What the Trainer trains: the U-ViT plus the latent sampling and the objective.

    ``forward(moments, context)``: ``moments`` float32 ``(B, 2*C, h, w)`` (posterior mean and
    logvar), ``context`` float32 ``(B, L, D)``.  A latent ``z ~ N(mean, exp(logvar))`` is drawn
    and multiplied by ``scale_factor`` (the VAE config's ``scaling_factor``), then the
    noise-prediction loss is returned as ``{"loss": scalar}``.  Only ``unet`` has parameters,
    so the Trainer's ``model_state.pdparams`` holds ``unet.*`` keys.
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

    ``context``: ``(P, L, D)`` prompt features; ``uncond_context``: ``(L, D)`` or ``(P, L, D)``
    empty-caption features (used only when ``guidance_scale != 1``).  ``unet`` is a
    ``UViTT2IModel``; its config gives the latent shape.
    """
    scheduler = scheduler or make_ddim_scheduler()
    p = context.shape[0]
    cfg = unet.config
    latents = randn_tensor([p, cfg.in_channels, cfg.sample_size, cfg.sample_size], generator=generator, dtype=context.dtype)
    if guidance_scale != 1.0:
        if uncond_context.ndim == 2:
            uncond_context = uncond_context.unsqueeze(0).expand([p] + list(uncond_context.shape))
        both = paddle.concat([uncond_context, context])
    scheduler.set_timesteps(num_inference_steps)
    for t in scheduler.timesteps:
        if guidance_scale == 1.0:
            eps = unet(latents, t, context).sample
        else:
            eps_u, eps_c = unet(paddle.concat([latents, latents]), t, both).sample.chunk(2)
            eps = eps_u + guidance_scale * (eps_c - eps_u)
        latents = scheduler.step(eps, t, latents).prev_sample
    return latents
