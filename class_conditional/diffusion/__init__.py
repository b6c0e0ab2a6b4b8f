"""Gaussian diffusion for DiT: ``create_diffusion(timestep_respacing, learn_sigma=True)``.

Both this and :mod:`class_conditional.transport` expose
``training_losses(model, x_start, model_kwargs) -> {"loss": ...}``.
"""
from .gaussian_diffusion import GaussianDiffusion, get_named_beta_schedule, mean_flat  # noqa: F401
from .respace import SpacedDiffusion, space_timesteps  # noqa: F401


def create_diffusion(timestep_respacing="", noise_schedule="linear", learn_sigma=True, diffusion_steps=1000):
    """The DiT diffusion: ``diffusion_steps`` training steps with ``noise_schedule`` betas, eps
    prediction, learned-range variance when ``learn_sigma``.  ``timestep_respacing`` (``""`` = all
    steps, ``"250"``, ``"ddim25"``, ...) selects the steps used for sampling."""
    betas = get_named_beta_schedule(noise_schedule, diffusion_steps)
    steps = timestep_respacing or str(diffusion_steps)
    return SpacedDiffusion(space_timesteps(diffusion_steps, steps), betas, learn_sigma=learn_sigma)
