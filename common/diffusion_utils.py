"""Small diffusion-objective helpers shared by the ppdiffusers-scheduler training scripts
(stable_diffusion, ddpm_tutorial's explicit loop)."""
import paddle

__all__ = ["min_snr_loss_weights", "DDPM_SAMPLERS", "ddpm_sampling_scheduler"]

# what a DDPMPipeline can sample with: "ddpm" = ancestral (the pipeline's own DDPMScheduler), "ddim" = deterministic DDIM
DDPM_SAMPLERS = ("ddpm", "ddim")


def min_snr_loss_weights(noise_scheduler, timesteps, snr_gamma, prediction_type="epsilon"):
    """Per-sample Min-SNR-gamma loss weights (Hang et al. 2023, arXiv 2303.09556, sec. 3.4).

    With ``SNR(t) = abar_t / (1 - abar_t)`` the paper's weight on the x0-space loss is
    ``min(SNR, gamma)``; rewritten for the network's target (the same per-sample factor as
    diffusers' ``train_text_to_image --snr_gamma`` for epsilon / v) this becomes

    * ``epsilon``:      ``min(SNR, gamma) / SNR``
    * ``v_prediction``: ``min(SNR, gamma) / (SNR + 1)``
    * ``sample`` (x0):  ``min(SNR, gamma)``

    Args:
        noise_scheduler: a DDPM-family scheduler with ``alphas_cumprod``.
        timesteps: int64 tensor ``(B,)``.
        snr_gamma: gamma (> 0), 5.0 recommended by the paper.
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.

    Returns:
        float32 tensor ``(B,)``.

    Raises:
        ValueError: unknown ``prediction_type`` or ``snr_gamma <= 0``.
    """
    from ppdiffusers.training_utils import compute_snr

    if snr_gamma is None or snr_gamma <= 0:
        raise ValueError(f"--snr_gamma must be > 0, got {snr_gamma}")
    snr = compute_snr(noise_scheduler, timesteps)
    clipped = paddle.minimum(snr, paddle.full_like(snr, float(snr_gamma)))
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    if prediction_type == "sample":
        return clipped
    raise ValueError(f"--prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}")


def ddpm_sampling_scheduler(scheduler, sampler):
    """The scheduler a ``DDPMPipeline`` samples with, built from the training scheduler's config.

    Args:
        scheduler: the ``DDPMScheduler`` the UNet was trained with (or any scheduler whose config
            carries ``num_train_timesteps``, the betas and ``prediction_type``).
        sampler: ``"ddpm"``: ancestral sampling, ``DDPMScheduler.from_config`` (Ho et al. 2020,
            Alg. 2).  With fewer inference steps than training steps ppdiffusers walks every
            ``T // steps``-th timestep and recomputes the posterior variance of each jump
            (diffusers' default when ``DDPMPipeline(num_inference_steps=N)`` is called, and what
            diffusers' ``train_unconditional`` samples its grids with).  ``"ddim"``:
            ``DDIMScheduler.from_config``, deterministic DDIM with eta 0 (Song et al. 2021, eq. 12).

    Returns:
        a new scheduler (the given one is not changed).

    Raises:
        ValueError: ``sampler`` is not one of :data:`DDPM_SAMPLERS`.
    """
    from ppdiffusers import DDIMScheduler, DDPMScheduler

    if sampler == "ddpm":
        return DDPMScheduler.from_config(scheduler.config)
    if sampler == "ddim":
        return DDIMScheduler.from_config(scheduler.config)
    raise ValueError(f"sampler must be one of {DDPM_SAMPLERS}, got {sampler!r}")
