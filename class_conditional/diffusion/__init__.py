"""Gaussian diffusion for DiT: ``create_diffusion(timestep_respacing, learn_sigma=True)``.

Both this and :mod:`transport` expose
``training_losses(model, x_start, model_kwargs) -> {"loss": ...}``.
"""
from .gaussian_diffusion import GaussianDiffusion, get_named_beta_schedule, mean_flat  # noqa: F401
from .respace import SpacedDiffusion, space_timesteps  # noqa: F401


def create_diffusion(timestep_respacing="", noise_schedule="linear", sigma_small=False, learn_sigma=True,
                     rescale_learned_sigmas=False, diffusion_steps=1000):
    """The DiT diffusion (facebookresearch/DiT ``diffusion.create_diffusion``, same defaults):
    ``diffusion_steps`` training steps with ``noise_schedule`` betas and eps prediction.

    Args:
        timestep_respacing: ``""`` (all steps), ``"250"``, ``"ddim25"``, ... the steps kept for
            sampling (see :func:`space_timesteps`).
        noise_schedule: ``"linear"`` | ``"squaredcos_cap_v2"``.
        sigma_small: without ``learn_sigma``, use the posterior variance (FIXED_SMALL) instead of
            DiT's default FIXED_LARGE.
        learn_sigma: the model also predicts the variance interpolation (LEARNED_RANGE).
        rescale_learned_sigmas: scale the VB term by ``num_timesteps / 1000`` (RESCALED_MSE).
        diffusion_steps: T of the training process.

    DiT's ``use_kl`` and ``predict_xstart`` variants are not offered (nothing here trains them).

    Raises:
        ValueError: an unknown schedule or an impossible respacing.
    """
    betas = get_named_beta_schedule(noise_schedule, diffusion_steps)
    steps = timestep_respacing or str(diffusion_steps)
    return SpacedDiffusion(space_timesteps(diffusion_steps, steps), betas, learn_sigma=learn_sigma, sigma_small=sigma_small,
                           rescale_learned_sigmas=rescale_learned_sigmas)
