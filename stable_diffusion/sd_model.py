"""The trainable Stable Diffusion wrapper: VAE (frozen) + CLIP text encoder (frozen unless trained)
+ UNet2DConditionModel, with the latent-diffusion training objective.

Objective (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models",
eq. 2): encode pixels to latents ``z = vae.encode(x).sample() * scaling_factor``, draw ``t`` uniform
in ``[0, T)`` and noise ``eps``, form ``z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps`` (Ho et al.
2020, eq. 4) and regress the UNet output on ``eps`` (``epsilon``) or on the velocity
``v = sqrt(abar_t) eps - sqrt(1 - abar_t) z`` (``v_prediction``, Salimans & Ho 2022, sec. 4).
"""
import contextlib

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from common.diffusion_utils import min_snr_loss_weights  # noqa: F401  (shared; re-exported here)

__all__ = ["sample_training_noise", "min_snr_loss_weights", "training_losses", "StableDiffusionModel"]


def sample_training_noise(latents, noise_offset=0.0, input_perturbation=0.0):
    """Draw the noise for one training step, in a fixed order from paddle's global generator.

    1. ``noise = randn(latents.shape)``
    2. if ``noise_offset``: ``noise += noise_offset * randn([B, C, 1, 1])`` (per-sample, per-channel
       constant shift; "offset noise", Guttenberg 2023, lets the model learn very dark/bright images)
    3. if ``input_perturbation``: ``input_noise = noise + input_perturbation * randn(latents.shape)``
       (Ning et al. 2023, "Input Perturbation Reduces Exposure Bias in Diffusion Models", arXiv
       2301.11706); else ``input_noise = noise``.

    Args:
        latents: float tensor ``(B, C, H, W)``.

    Returns:
        ``(noise, input_noise)``: the regression target's noise and the noise added to the inputs.
    """
    noise = paddle.randn(latents.shape, dtype=latents.dtype)
    if noise_offset:
        noise = noise + noise_offset * paddle.randn([latents.shape[0], latents.shape[1], 1, 1], dtype=latents.dtype)
    input_noise = noise
    if input_perturbation:
        input_noise = noise + input_perturbation * paddle.randn(latents.shape, dtype=latents.dtype)
    return noise, input_noise


def training_losses(model, x_start, model_kwargs, noise_scheduler, prediction_type="epsilon", snr_gamma=None, noise_offset=0.0, input_perturbation=0.0):
    """The shared diffusion objective contract: ``-> {"loss": scalar, ...}``.

    Args:
        model: the denoiser, called as ``model(z_t, t, **model_kwargs)`` returning an object whose
            ``.sample`` (or first element) is ``(B, C, H, W)``.
        x_start: clean latents ``(B, C, H, W)`` (already times the VAE scaling factor).
        model_kwargs: extra inputs (``encoder_hidden_states`` ``(B, L, D)``).
        noise_scheduler: DDPM-family scheduler (``add_noise``, ``get_velocity``, ``alphas_cumprod``).
        prediction_type / snr_gamma / noise_offset / input_perturbation: see the module docstring,
            :func:`min_snr_loss_weights` and :func:`sample_training_noise`.

    Returns:
        dict with ``loss`` (scalar), ``timesteps`` ``(B,)`` and ``per_sample_loss`` ``(B,)``.

    Raises:
        ValueError: unknown ``prediction_type``.
    """
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"--prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    batch = x_start.shape[0]
    noise, input_noise = sample_training_noise(x_start, noise_offset, input_perturbation)
    timesteps = paddle.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), dtype="int64")
    noisy = noise_scheduler.add_noise(x_start, input_noise, timesteps)
    out = model(noisy, timesteps, **model_kwargs)
    pred = out.sample if hasattr(out, "sample") else out[0]
    target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(x_start, noise, timesteps)
    per_sample = F.mse_loss(pred.cast("float32"), target.cast("float32"), reduction="none").mean(axis=[1, 2, 3])
    if snr_gamma:
        per_sample = per_sample * min_snr_loss_weights(noise_scheduler, timesteps, snr_gamma, prediction_type)
    return {"loss": per_sample.mean(), "timesteps": timesteps, "per_sample_loss": per_sample}


class StableDiffusionModel(nn.Layer):
    """VAE + text encoder + UNet as one ``nn.Layer`` the paddlenlp Trainer optimises.

    ``forward(input_ids, pixel_values)`` returns the scalar loss.  The VAE is always frozen (eval
    mode, ``stop_gradient``); the text encoder is frozen unless ``train_text_encoder``.  When the
    text encoder trains with its own learning rate, each of its parameters carries the ratio
    ``text_encoder_lr / unet_lr`` in ``optimize_attr["learning_rate"]`` (paddle multiplies the
    optimizer's learning rate by it), so one optimizer and one scheduler serve both.

    Args:
        vae / text_encoder / unet: ppdiffusers ``AutoencoderKL``, ``CLIPTextModel``, ``UNet2DConditionModel``.
        noise_scheduler: the training ``DDPMScheduler``.
        train_text_encoder: train the text encoder too.
        lr_ratio_text_encoder: text encoder lr / unet lr (only with ``train_text_encoder``).
        prediction_type, snr_gamma, noise_offset, input_perturbation: objective options.
    """

    def __init__(self, vae, text_encoder, unet, noise_scheduler, train_text_encoder=False, lr_ratio_text_encoder=1.0,
                 prediction_type="epsilon", snr_gamma=None, noise_offset=0.0, input_perturbation=0.0):
        super().__init__()
        self.vae, self.text_encoder, self.unet = vae, text_encoder, unet
        self.noise_scheduler = noise_scheduler
        self.train_text_encoder = bool(train_text_encoder)
        self.prediction_type = prediction_type
        self.snr_gamma = snr_gamma
        self.noise_offset = noise_offset
        self.input_perturbation = input_perturbation
        self.vae.eval()
        for p in self.vae.parameters():
            p.stop_gradient = True
        if self.train_text_encoder:
            self.text_encoder.train()
            for p in self.text_encoder.parameters():
                p.stop_gradient = False
                p.optimize_attr["learning_rate"] = float(lr_ratio_text_encoder)
        else:
            self.text_encoder.eval()
            for p in self.text_encoder.parameters():
                p.stop_gradient = True
        self.unet.train()
        for p in self.unet.parameters():
            p.stop_gradient = False

    def train(self):
        # keep the frozen parts in eval mode when the Trainer calls model.train()
        super().train()
        self.vae.eval()
        if not self.train_text_encoder:
            self.text_encoder.eval()
        return self

    @paddle.no_grad()
    def encode_latents(self, pixel_values):
        """Pixels ``(B, 3, H, W)`` in ``[-1, 1]`` -> latents ``(B, 4, H/f, W/f)`` x ``scaling_factor``."""
        latents = self.vae.encode(pixel_values).latent_dist.sample()
        return latents * self.vae.config.scaling_factor

    def encode_text(self, input_ids):
        """Token ids ``(B, L)`` int64 -> ``encoder_hidden_states`` ``(B, L, D)``."""
        ctx = contextlib.nullcontext() if self.train_text_encoder else paddle.no_grad()
        with ctx:
            return self.text_encoder(input_ids)[0]

    def forward(self, input_ids=None, pixel_values=None, **kwargs):
        latents = self.encode_latents(pixel_values)
        encoder_hidden_states = self.encode_text(input_ids)
        out = training_losses(
            self.unet,
            latents,
            {"encoder_hidden_states": encoder_hidden_states},
            self.noise_scheduler,
            prediction_type=self.prediction_type,
            snr_gamma=self.snr_gamma,
            noise_offset=self.noise_offset,
            input_perturbation=self.input_perturbation,
        )
        return out["loss"]
