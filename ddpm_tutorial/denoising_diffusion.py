"""The tutorial's compact style (``Unet`` + ``GaussianDiffusion`` + ``Trainer``), built on ppdiffusers.

This mirrors how the ``denoising_diffusion_pytorch`` package is used in the tutorial::

    model = Unet(dim=32, dim_mults=(1, 2, 4))
    diffusion = GaussianDiffusion(model, image_size=32, timesteps=1000, sampling_timesteps=250)
    trainer = Trainer(diffusion, "data/demo/faces", train_batch_size=32, train_lr=5e-4,
                      train_num_steps=2000, ema_decay=0.995, save_and_sample_every=500)
    trainer.train()                            # ends by saving the DDPMPipeline results/pipeline/
    images = diffusion.sample(batch_size=16)   # (16, 3, 32, 32) float32 in [0, 1]

and ``GaussianDiffusion`` computes what that package's ``GaussianDiffusion`` computes (its
schedules, SNR loss weights, DDPM and DDIM sampling; see the class docstring for the few
departures).  The network is a ppdiffusers ``UNet2DModel``, noising and the DDPM step use
ppdiffusers' ``DDPMScheduler``; ``diffusion.pipeline()`` is the matching ``DDPMPipeline``, which
:meth:`Trainer.train` saves with the EMA weights to ``<results_folder>/pipeline``
(:meth:`Trainer.save_pipeline`; ``DDPMPipeline.from_pretrained`` loads it).
"""
import math
import os
import shutil
import time

import numpy as np
import paddle
import paddle.nn as nn
from ppdiffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from ppdiffusers.training_utils import EMAModel
from ppdiffusers.utils import randn_tensor
from PIL import Image

from common.checkpoint import _fsync_path, fsync_tree, gather_rng_states, load_optimizer_state, optimizer_state, preserve_rng_state, replace_dir, restore_rank_rng_state
from common.distributed import barrier, get_world_size, init_distributed, is_main_process, mean_over_ranks, seed_everything, wrap_data_parallel
from common.fast_ops import apply_fast_ops, describe_fast_ops
from common.images import ImageFolderDataset, ImageTransform, ResumableBatchSampler, save_grid
from common.logging_utils import TrainLogger
from common.run_guard import TrainingGuard, start_run

__all__ = ["build_unet", "Unet", "GaussianDiffusion", "Trainer", "linear_beta_schedule", "cosine_beta_schedule", "sigmoid_beta_schedule", "ddim_time_pairs"]


def build_unet(sample_size, block_out_channels, attention_levels, layers_per_block=2, channels=3, norm_num_groups=None):
    """A ``UNet2DModel`` with one down/up block per entry of ``block_out_channels``.

    Level ``i`` uses ``AttnDownBlock2D``/``AttnUpBlock2D`` (spatial self-attention) when
    ``i in attention_levels``, else plain ResNet ``DownBlock2D``/``UpBlock2D``; the up path mirrors
    the down path.  The tutorial's 128x128 layout is ``block_out_channels=(128, 128, 256, 256,
    512, 512)``, ``attention_levels=(4,)``, ``layers_per_block=2``.

    Args:
        sample_size: image side in pixels; must be divisible by ``2 ** (levels - 1)``.
        block_out_channels: channels per level.
        attention_levels: indices of the levels with attention.
        norm_num_groups: GroupNorm groups (default: ``min(32, smallest channel count)``).

    Raises:
        ValueError: an attention level out of range, or a size not divisible by the downsampling.
    """
    levels = len(block_out_channels)
    bad = [i for i in attention_levels if not 0 <= i < levels]
    if bad:
        raise ValueError(f"attention levels {bad} out of range for {levels} levels")
    if sample_size % (2 ** (levels - 1)):
        raise ValueError(f"resolution {sample_size} is not divisible by 2**{levels - 1} (one halving per level but the last)")
    down = tuple("AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(range(levels)))
    groups = norm_num_groups or min(32, min(block_out_channels))
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(block_out_channels),
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=groups,
    )


def Unet(dim=64, dim_mults=(1, 2, 4, 8), channels=3, image_size=32, layers_per_block=2, attention_levels=None):
    """The tutorial's ``Unet(dim, dim_mults)`` as a ppdiffusers ``UNet2DModel`` (a factory).

    Level ``i`` has ``dim * dim_mults[i]`` channels; attention goes on the last two levels unless
    ``attention_levels`` says otherwise.
    """
    if attention_levels is None:
        attention_levels = tuple(range(max(0, len(dim_mults) - 2), len(dim_mults)))
    return build_unet(image_size, [dim * m for m in dim_mults], attention_levels, layers_per_block, channels)


OBJECTIVES = {"pred_noise": "epsilon", "pred_x0": "sample", "pred_v": "v_prediction"}
BETA_SCHEDULES = ("linear", "cosine", "sigmoid")


def linear_beta_schedule(timesteps):
    """Ho et al. 2020's linear betas (1e-4 .. 0.02 at T = 1000) scaled by ``1000 / timesteps``.

    The scaling keeps the total noise comparable for any T, as lucidrains' ``linear_beta_schedule``
    does: T = 1000 gives 1e-4 .. 0.02, T = 100 gives 1e-3 .. 0.2.

    Returns:
        float64 numpy array ``(timesteps,)`` in (0, 1).

    Raises:
        ValueError: ``timesteps <= 20`` (the last beta, ``20 / timesteps``, would reach 1).
    """
    if timesteps <= 20:
        raise ValueError(f"timesteps={timesteps}: the linear schedule needs more than 20 steps (its last beta is 20 / timesteps)")
    scale = 1000.0 / timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)


def cosine_beta_schedule(timesteps, s=0.008):
    """Nichol & Dhariwal 2021 (arXiv 2102.09672, eq. 17) cosine schedule.

    ``abar(t) = cos(((t / T) + s) / (1 + s) * pi / 2) ** 2`` and ``beta_t = 1 - abar(t + 1) / abar(t)``
    clipped to [0, 0.999]; the same numbers as ppdiffusers' ``"squaredcos_cap_v2"``.

    Returns:
        float64 numpy array ``(timesteps,)`` in [0, 0.999].
    """
    t = np.linspace(0, timesteps, timesteps + 1, dtype=np.float64) / timesteps
    alphas_cumprod = np.cos((t + s) / (1 + s) * math.pi * 0.5) ** 2
    return np.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)


def sigmoid_beta_schedule(timesteps, start=-3, end=3, tau=1):
    """Sigmoid schedule of Jabri et al. 2022 (arXiv 2212.11972, Fig. 8), lucidrains' default.

    ``abar(t) = (sig(end / tau) - sig(((end - start) t / T + start) / tau)) / (sig(end / tau) -
    sig(start / tau))`` and ``beta_t = 1 - abar(t + 1) / abar(t)`` clipped to [0, 0.999]; at
    T = 1000 the betas run from 3.0e-4 to 0.999.  (ppdiffusers' ``beta_schedule="sigmoid"`` is an
    unrelated GeoDiff schedule, so this one reaches the scheduler as ``trained_betas``.)

    Returns:
        float64 numpy array ``(timesteps,)`` in [0, 0.999].

    Raises:
        ValueError: ``start >= end`` or ``tau <= 0``.
    """
    if not start < end:
        raise ValueError(f"start={start} must be smaller than end={end}")
    if tau <= 0:
        raise ValueError(f"tau={tau} must be positive")
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    t = np.linspace(0, timesteps, timesteps + 1, dtype=np.float64) / timesteps
    # the reference evaluates the two end constants as float32 scalars; rounding them the same way
    # matters near t = T, where abar -> 0 (8.6e-6 relative in abar at t = 998 otherwise)
    v_start, v_end = (float(np.float32(sig(float(np.float32(z))))) for z in (start / tau, end / tau))
    alphas_cumprod = (v_end - sig((t * (end - start) + start) / tau)) / (v_end - v_start)
    return np.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)


def ddim_time_pairs(timesteps, sampling_timesteps):
    """The DDIM steps ``[(t, t_next), ...]`` from ``timesteps - 1`` down to ``t_next = -1``.

    lucidrains' grid: ``linspace(-1, T - 1, S + 1)`` truncated to integers ("trailing" spacing:
    T = 1000, S = 50 gives 999, 979, ..., 19, then -1, i.e. "return the predicted x0").  The
    linspace is evaluated in float32 the way ``torch.linspace`` does it (from the start for the first
    half of the points, from the end for the second half) so the integers are the same even where
    float32 rounding moves a point just below an integer (T = 100, S = 90 steps 90 -> 89 -> 87).

    Returns:
        list of ``sampling_timesteps`` python-int pairs, ``t`` strictly decreasing, last ``t_next == -1``.

    Raises:
        ValueError: ``sampling_timesteps`` not in ``[1, timesteps]``.
    """
    if not 1 <= sampling_timesteps <= timesteps:
        raise ValueError(f"sampling_timesteps={sampling_timesteps} must be in [1, timesteps={timesteps}]")
    n = sampling_timesteps + 1
    i = np.arange(n, dtype=np.float32)
    step = np.float32(timesteps / sampling_timesteps)
    start, end = np.float32(-1), np.float32(timesteps - 1)
    grid = np.where(np.arange(n) < n // 2, start + step * i, end - step * (n - 1 - i)).astype(np.float32)
    times = [int(v) for v in np.trunc(grid)][::-1]
    return list(zip(times[:-1], times[1:]))


class GaussianDiffusion(nn.Layer):
    """DDPM / DDIM around a ``UNet2DModel``, computing what lucidrains' ``GaussianDiffusion`` does.

    Reference: ``denoising_diffusion_pytorch`` 2.3.1 ``GaussianDiffusion`` (same option names and
    defaults: ``objective="pred_v"``, ``beta_schedule="sigmoid"``, ``sampling_timesteps=timesteps``,
    ``ddim_sampling_eta=0``, ``min_snr_loss_weight=False``, ``min_snr_gamma=5``).

    Training (Ho et al. 2020, arXiv 2006.11239): ``t ~ U{0..T-1}``, ``eps ~ N(0, I)``,
    ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (ppdiffusers ``DDPMScheduler.add_noise``); the
    network's output is regressed on the ``objective``'s target -- ``"pred_noise"`` eps (Ho et al.
    eq. 14), ``"pred_x0"`` x_0, ``"pred_v"`` ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0``
    (Salimans & Ho 2022, arXiv 2202.00512) -- and each sample's MSE (mean over C, H, W) is weighted
    by ``loss_weight[t]`` before the batch mean.  With ``snr = abar / (1 - abar)`` and
    ``s = min(snr, min_snr_gamma)`` if ``min_snr_loss_weight`` else ``snr`` (Hang et al. 2023,
    arXiv 2303.09556), ``loss_weight`` is ``s / snr`` (pred_noise), ``s`` (pred_x0) or
    ``s / (snr + 1)`` (pred_v): without min-SNR every objective is the eps-MSE in disguise.

    Sampling (:meth:`sample`): ``sampling_timesteps == timesteps`` runs ancestral DDPM
    (``DDPMScheduler.step``: posterior mean from the x0 estimate clipped to [-1, 1], posterior
    variance, no noise at t = 0 -- lucidrains' ``p_sample_loop``); fewer steps run DDIM (Song et al.
    2021, arXiv 2010.02502, eq. 12) over :func:`ddim_time_pairs` with eps re-derived from the
    clipped x0 (:meth:`ddim_step`).  ppdiffusers' ``DDIMScheduler`` is not used for this: through
    ``DDPMPipeline`` it uses the raw eps (``use_clipped_model_output=False``), and its previous step
    ``t - T // S`` differs from the reference grid whenever S does not divide T.

    Args:
        model: ``UNet2DModel`` (possibly wrapped in ``paddle.DataParallel``) called as
            ``model(x_t, t).sample`` with ``x_t`` (B, C, H, W) float32 and ``t`` (B,) int64.
        image_size: side in pixels (int) of the square images it models.
        timesteps: number of diffusion steps T.
        sampling_timesteps: steps used by :meth:`sample` (default T); fewer than T uses DDIM.
        objective: ``"pred_noise"`` | ``"pred_x0"`` | ``"pred_v"``.
        beta_schedule: ``"linear"`` (:func:`linear_beta_schedule`), ``"cosine"``
            (:func:`cosine_beta_schedule`) or ``"sigmoid"`` (:func:`sigmoid_beta_schedule`).
        ddim_sampling_eta: DDIM's eta (0 = deterministic; 1 = DDPM-like variance, eq. 16).
        min_snr_loss_weight: clamp the SNR in the loss weight at ``min_snr_gamma``.
        min_snr_gamma: the clamp (> 0).

    Attributes:
        noise_scheduler: the ``DDPMScheduler`` holding these betas (``beta_schedule="linear"`` with
            the scaled start/end, ``"squaredcos_cap_v2"`` for cosine, ``trained_betas`` for sigmoid),
            so :meth:`pipeline` saves a ``DDPMPipeline`` that samples the same DDPM chain.
        betas, alphas_cumprod: float64 numpy ``(T,)``; loss_weight: float32 tensor ``(T,)``.

    Intentional departures from the reference: no ``self_condition``, ``offset_noise_strength``,
    ``immiscible``, ``schedule_fn_kwargs`` or ``auto_normalize`` options (:meth:`forward` always
    maps [0, 1] to [-1, 1]; :meth:`training_losses` takes [-1, 1]); the noising uses ppdiffusers'
    float32 ``alphas_cumprod`` (x_t within a few 1e-6 of the reference's); random draws come from paddle,
    so only the computation given the same noise, not the random stream, matches; :meth:`sample`
    clips its [0, 1] output (a no-op up to float rounding).

    Raises:
        ValueError: an unknown ``objective`` / ``beta_schedule``, a non-positive ``timesteps`` or
            ``image_size``, ``sampling_timesteps`` outside ``[1, timesteps]``, a negative
            ``ddim_sampling_eta``, a non-positive ``min_snr_gamma``, or ``timesteps <= 20`` with the
            linear schedule -- each message names the argument.
    """

    def __init__(
        self,
        model,
        image_size,
        *,
        timesteps=1000,
        sampling_timesteps=None,
        objective="pred_v",
        beta_schedule="sigmoid",
        ddim_sampling_eta=0.0,
        min_snr_loss_weight=False,
        min_snr_gamma=5,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective {objective!r}: expected one of {sorted(OBJECTIVES)}")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule {beta_schedule!r}: expected one of {list(BETA_SCHEDULES)}")
        if not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
            raise ValueError(f"timesteps={timesteps!r} must be a positive integer")
        if not isinstance(image_size, (int, np.integer)) or image_size < 1:
            raise ValueError(f"image_size={image_size!r} must be a positive integer")
        sampling_timesteps = timesteps if sampling_timesteps is None else sampling_timesteps
        if not isinstance(sampling_timesteps, (int, np.integer)) or not 1 <= sampling_timesteps <= timesteps:
            raise ValueError(f"sampling_timesteps={sampling_timesteps!r} must be an integer in [1, timesteps={timesteps}]")
        if ddim_sampling_eta < 0:
            raise ValueError(f"ddim_sampling_eta={ddim_sampling_eta} must be >= 0")
        if min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma={min_snr_gamma} must be > 0")
        self.config = dict(image_size=image_size, timesteps=timesteps, sampling_timesteps=sampling_timesteps, objective=objective, beta_schedule=beta_schedule,
                           ddim_sampling_eta=ddim_sampling_eta, min_snr_loss_weight=min_snr_loss_weight, min_snr_gamma=min_snr_gamma)
        self.objective = objective
        self.model = model
        self.image_size = int(image_size)
        self.num_timesteps = int(timesteps)
        self.sampling_timesteps = int(sampling_timesteps)
        self.is_ddim_sampling = self.sampling_timesteps < self.num_timesteps
        self.ddim_sampling_eta = float(ddim_sampling_eta)

        schedule = {"linear": linear_beta_schedule, "cosine": cosine_beta_schedule, "sigmoid": sigmoid_beta_schedule}[beta_schedule]
        self.betas = schedule(self.num_timesteps)
        common = dict(num_train_timesteps=self.num_timesteps, prediction_type=OBJECTIVES[objective], clip_sample=True, clip_sample_range=1.0, variance_type="fixed_small")
        if beta_schedule == "linear":
            self.noise_scheduler = DDPMScheduler(beta_schedule="linear", beta_start=float(self.betas[0]), beta_end=float(self.betas[-1]), **common)
        elif beta_schedule == "cosine":
            self.noise_scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", **common)
        else:
            self.noise_scheduler = DDPMScheduler(trained_betas=self.betas.tolist(), **common)

        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        clipped = np.minimum(snr, min_snr_gamma) if min_snr_loss_weight else snr
        weight = {"pred_noise": clipped / snr, "pred_x0": clipped, "pred_v": clipped / (snr + 1.0)}[objective]
        self.register_buffer("loss_weight", paddle.to_tensor(weight.astype("float32")), persistable=False)

    @property
    def unet(self):
        """The bare ``UNet2DModel`` (unwrapped from DataParallel)."""
        return getattr(self.model, "_layers", self.model)

    def training_losses(self, model, x_start, model_kwargs=None, t=None, noise=None):
        """The weighted regression loss for a batch (lucidrains' ``p_losses``).

        Args:
            model: called as ``model(x_t, t, **model_kwargs).sample`` -> (B, C, H, W).
            x_start: (B, C, H, W) float32 clean images in [-1, 1].
            t: optional (B,) int64 timesteps in [0, T) (default: uniform draws).
            noise: optional (B, C, H, W) float32 eps (default: ``paddle.randn``, drawn before ``t``).

        Returns:
            ``{"loss": scalar float32, "loss_per_sample": (B,) float32}`` -- per-sample MSE times
            ``loss_weight[t]``, and its batch mean.

        Raises:
            ValueError: ``t`` outside [0, T) or not of shape (B,).
        """
        batch = x_start.shape[0]
        if noise is None:
            noise = paddle.randn(x_start.shape, dtype=x_start.dtype)
        if t is None:
            t = paddle.randint(0, self.num_timesteps, [batch], dtype="int64")
        else:
            t = t.astype("int64") if isinstance(t, paddle.Tensor) else paddle.to_tensor(t, dtype="int64")
            t_np = t.numpy()
            if t_np.shape != (batch,) or t_np.min() < 0 or t_np.max() >= self.num_timesteps:
                raise ValueError(f"t must be {batch} integers in [0, {self.num_timesteps}), got {t_np.tolist()}")
        noisy = self.noise_scheduler.add_noise(x_start, noise, t)
        model_output = model(noisy, t, **(model_kwargs or {})).sample
        if self.objective == "pred_noise":
            target = noise
        elif self.objective == "pred_x0":
            target = x_start
        else:
            target = self.noise_scheduler.get_velocity(x_start, noise, t)
        diff = model_output.astype("float32") - target.astype("float32")
        per_sample = (diff * diff).reshape([batch, -1]).mean(axis=1) * paddle.gather(self.loss_weight, t)
        return {"loss": per_sample.mean(), "loss_per_sample": per_sample}

    def forward(self, img):
        """Loss for images ``img`` (B, C, H, W) float32 in [0, 1] (the tutorial's convention)."""
        return self.training_losses(self.model, img * 2.0 - 1.0)["loss"]

    def model_predictions(self, x, t, model_output):
        """``(pred_noise, x_start)`` at one timestep, x_start clipped to [-1, 1] and eps re-derived from it.

        ``x_start`` from the output by ``objective`` (pred_noise: ``x/sqrt(abar) - sqrt(1/abar - 1) eps``;
        pred_v: ``sqrt(abar) x - sqrt(1 - abar) v``), clipped, then
        ``eps = (x/sqrt(abar) - x_start) / sqrt(1/abar - 1)`` -- lucidrains' ``model_predictions``
        with ``clip_x_start=True, rederive_pred_noise=True``.

        Args:
            x: (B, C, H, W) float32 ``x_t``.
            t: python int in [0, T).
            model_output: (B, C, H, W) the network's output at ``(x, t)``.
        """
        a = float(self.alphas_cumprod[t])
        recip, recipm1 = math.sqrt(1.0 / a), math.sqrt(1.0 / a - 1.0)
        out = model_output.astype("float32")
        if self.objective == "pred_noise":
            x_start = recip * x - recipm1 * out
        elif self.objective == "pred_x0":
            x_start = out
        else:
            x_start = math.sqrt(a) * x - math.sqrt(1.0 - a) * out
        x_start = x_start.clip(-1.0, 1.0)
        return (recip * x - x_start) / recipm1, x_start

    def ddim_step(self, x, t, t_next, model_output, noise=None):
        """One DDIM update ``x_t -> x_{t_next}`` (Song et al. 2021, arXiv 2010.02502, eq. 12 and 16).

        ``x_{t_next} = sqrt(abar_next) x0 + sqrt(1 - abar_next - sigma^2) eps + sigma z`` with
        ``sigma = eta sqrt((1 - abar_t / abar_next)(1 - abar_next) / (1 - abar_t))`` and (x0, eps)
        from :meth:`model_predictions`; ``t_next == -1`` returns the clipped x0.

        Args:
            x: (B, C, H, W) float32 ``x_t``.
            t, t_next: python ints, ``-1 <= t_next < t < T``.
            model_output: (B, C, H, W) network output at ``(x, t)``.
            noise: (B, C, H, W) float32 z, needed when ``ddim_sampling_eta > 0`` and ``t_next >= 0``.

        Returns:
            ``(x_next, x_start)``, both (B, C, H, W) float32.

        Raises:
            ValueError: bad ``t`` / ``t_next``, or ``noise`` missing while ``eta > 0``.
        """
        if not -1 <= t_next < t < self.num_timesteps:
            raise ValueError(f"need -1 <= t_next < t < {self.num_timesteps}, got t={t}, t_next={t_next}")
        pred_noise, x_start = self.model_predictions(x, t, model_output)
        if t_next < 0:
            return x_start, x_start
        a, a_next = float(self.alphas_cumprod[t]), float(self.alphas_cumprod[t_next])
        sigma = self.ddim_sampling_eta * math.sqrt((1.0 - a / a_next) * (1.0 - a_next) / (1.0 - a))
        x_next = math.sqrt(a_next) * x_start + math.sqrt(1.0 - a_next - sigma**2) * pred_noise
        if sigma > 0:
            if noise is None:
                raise ValueError("noise is required when ddim_sampling_eta > 0")
            x_next = x_next + sigma * noise
        return x_next, x_start

    def ddim_time_pairs(self):
        """:func:`ddim_time_pairs` for this diffusion's ``timesteps`` / ``sampling_timesteps``."""
        return ddim_time_pairs(self.num_timesteps, self.sampling_timesteps)

    def _predict(self, x, t):
        return self.unet(x, paddle.full([x.shape[0]], t, dtype="int64")).sample

    @paddle.no_grad()
    def ddim_sample(self, img, generator=None, variance_noise=None):
        """Run DDIM from ``img`` = x_T (B, C, H, W) float32 ~ N(0, I); returns x_0 in [-1, 1].

        ``variance_noise``: optional list with one (B, C, H, W) z per step (used only when
        ``ddim_sampling_eta > 0``); otherwise z is drawn from ``generator``.
        """
        for i, (t, t_next) in enumerate(self.ddim_time_pairs()):
            noise = None
            if self.ddim_sampling_eta > 0 and t_next >= 0:
                noise = variance_noise[i] if variance_noise is not None else randn_tensor(img.shape, generator=generator, dtype=img.dtype)
            img, _ = self.ddim_step(img, t, t_next, self._predict(img, t), noise)
        return img

    @paddle.no_grad()
    def p_sample_loop(self, img, generator=None):
        """Ancestral DDPM over all T steps from ``img`` = x_T (B, C, H, W) float32; returns x_0 in [-1, 1].

        Each step is ppdiffusers ``DDPMScheduler.step`` (clip_sample, fixed_small variance), the
        same posterior step as lucidrains' ``p_sample``.
        """
        scheduler = DDPMScheduler.from_config(self.noise_scheduler.config)
        scheduler.set_timesteps(self.num_timesteps)
        for t in scheduler.timesteps:
            img = scheduler.step(self._predict(img, int(t)), t, img, generator=generator).prev_sample
        return img

    @paddle.no_grad()
    def sample(self, batch_size=16, seed=None):
        """Generate ``batch_size`` images: float32 tensor (B, C, H, W) in [0, 1].

        DDIM when ``sampling_timesteps < timesteps``, else ancestral DDPM; ``seed`` fixes x_T and
        the step noise (paddle's generator, not the reference's torch stream).
        """
        generator = paddle.Generator().manual_seed(seed) if seed is not None else None
        channels = self.unet.config["in_channels"]
        img = randn_tensor([batch_size, channels, self.image_size, self.image_size], generator=generator, dtype=paddle.float32)
        was_training = self.unet.training
        self.unet.eval()
        try:
            img = self.ddim_sample(img, generator) if self.is_ddim_sampling else self.p_sample_loop(img, generator)
        finally:
            self.unet.train(was_training)
        return ((img + 1.0) * 0.5).clip(0.0, 1.0)

    def pipeline(self):
        """A ``DDPMPipeline`` (unet + this ``DDPMScheduler``, betas in its config) for ``save_pretrained``.

        Its default sampling (all T steps) is the DDPM chain of :meth:`p_sample_loop`; a
        ``DDIMScheduler`` swapped in is ppdiffusers' DDIM, not :meth:`ddim_sample`.
        """
        return DDPMPipeline(unet=self.unet, scheduler=DDPMScheduler.from_config(self.noise_scheduler.config))


MILESTONE_LAST = "last"  # ``model-last.pdparams``: the state a run ended with (end of training or a stop signal)


def _check_milestone(milestone):
    """``milestone`` as a file-name part: a non-negative int or ``"last"`` (``ValueError`` otherwise)."""
    if milestone == MILESTONE_LAST:
        return milestone
    if isinstance(milestone, (int, np.integer)) and not isinstance(milestone, bool) and milestone >= 0:
        return int(milestone)
    raise ValueError(f"milestone {milestone!r}: expected a non-negative integer or {MILESTONE_LAST!r}")


def _save_file_atomically(obj, path):
    """``paddle.save(obj)`` to ``path`` without ever leaving a half-written ``path``.

    Written as ``<path>.tmp-<pid>``, fsynced, renamed over ``path``, then the folder is fsynced (the
    fsync helper of :mod:`common.checkpoint`); on an ``OSError`` (e.g. a full disk) the temporary
    file is removed and the old ``path`` stays as it was.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        paddle.save(obj, tmp)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)


class _MilestoneGuard(TrainingGuard):
    """:class:`common.run_guard.TrainingGuard` whose messages name the newest milestone file
    (``model-N.pdparams``) rather than ``checkpoint-<step>`` folders, which this Trainer does not write."""

    def __init__(self, trainer, skip_nan_steps):
        super().__init__(trainer.results_folder, skip_nan_steps)
        self._trainer = trainer

    def _newest(self):
        return self._trainer.newest_milestone_text()


class Trainer:
    """The tutorial's one-object training loop.

    Trains ``diffusion`` on the images below ``folder`` (resized + center-cropped to the
    diffusion's ``image_size``, random horizontal flips).  Writes into ``results_folder``:

    * every ``save_and_sample_every`` steps ``model-N.pdparams`` (milestone N = step //
      save_and_sample_every: model, EMA, optimizer, step, data position, every rank's RNG state)
      and ``sample-N.png`` (EMA samples);
    * when :meth:`train` ends, ``model-last.pdparams`` (the final state, also when the last step
      is not a milestone), the ``DDPMPipeline`` folder ``pipeline/`` (EMA UNet + the scheduler with
      this diffusion's betas; ``DDPMPipeline.from_pretrained(results_folder + "/pipeline")``) and,
      unless the last step was a milestone, ``sample-last.png``.

    Milestones and the pipeline are written atomically (temporary name, fsync, rename) by rank 0,
    a milestone once every rank handed over its RNG state.  The shared run guards of :mod:`common.run_guard` apply: the
    construction takes the lock file ``results_folder/.run.lock`` (a second run into the same folder
    fails; a dead run's lock is taken over) until :meth:`train` returns or :meth:`close`; a NaN/inf
    loss or gradient on any rank stops every rank with ``NonFiniteError`` naming the step, before
    the update and without saving (``skip_nan_steps`` tolerates a few), and NaN/inf weights are
    never saved; SIGTERM/SIGINT saves ``model-last.pdparams`` at the next step boundary and exits
    with ``128 + signal``.  Resume with :meth:`load` (``N`` or ``"last"``) before :meth:`train`.

    ``seed`` seeds the training draws, ``seed * world_size + rank`` on each rank
    (:func:`common.distributed.seed_everything`).  The initial weights are drawn when the model is
    built, before this class exists: call :func:`common.distributed.seed_model_init` with the same
    seed before ``Unet(...)``, so every rank starts from the same weights and the seed fixes them
    (``train_trainer_style.py`` does; DiT's seeding idiom).

    Args (the tutorial's names):
        train_batch_size: images per optimisation step per process (split over
            ``gradient_accumulate_every`` micro-batches).
        train_lr: AdamW learning rate.
        train_num_steps: total optimisation steps.
        gradient_accumulate_every: micro-batches per step.
        ema_decay: EMA decay ceiling (with ppdiffusers' warm-up ``(1+n)/(10+n)``).
        amp: mixed precision (bf16 autocast on CPU, fp16 with loss scaling on GPU).
        save_and_sample_every: milestone interval in steps.
        num_samples: images in each sample grid (a square number reads best).
        results_folder: where milestones, samples, logs and the pipeline go.
        augment_horizontal_flip: random horizontal flips.
        seed: global seed of the training draws (see above) and of the sample grids.
        logging_steps: console/VisualDL interval; the logged loss is the mean over ranks and
            micro-batches.
        num_workers: DataLoader worker processes.
        jpeg_draft: decode JPEGs at a reduced scale that still covers ``image_size`` (default True,
            :class:`common.images.ImageTransform` ``draft``); False: full-size decode.
        skip_nan_steps: how many NaN/inf steps to skip (update not applied) before stopping.
        fast_ops: on CPU, swap in the measured faster Paddle paths (:func:`common.fast_ops.apply_fast_ops`)
            on the UNet and its EMA copy; same parameters, checkpoints and numbers.
    Raises:
        FileNotFoundError / ValueError: a missing or image-less ``folder`` (from ``ImageFolderDataset``).
        ValueError: ``train_batch_size`` not divisible by ``gradient_accumulate_every``, or a
            negative ``skip_nan_steps``.
        common.run_guard.OutputDirInUseError: another live run uses ``results_folder``.
    """

    def __init__(
        self,
        diffusion,
        folder,
        train_batch_size=16,
        train_lr=1e-4,
        train_num_steps=100000,
        gradient_accumulate_every=1,
        ema_decay=0.995,
        amp=False,
        save_and_sample_every=1000,
        num_samples=16,
        results_folder="./results",
        augment_horizontal_flip=True,
        seed=0,
        logging_steps=10,
        num_workers=0,
        skip_nan_steps=0,
        jpeg_draft=True,
        fast_ops=True,
    ):
        init_distributed()
        self.results_folder = str(results_folder)
        self._run = start_run(self.results_folder, None, arg_name="--results_folder")  # lock file; every rank
        try:
            seed_everything(seed)
            self.diffusion = diffusion
            self.unet = diffusion.unet
            self.fast_ops = fast_ops
            fast_state = apply_fast_ops(self.unet, fast_ops)  # before the DataParallel wrap
            diffusion.model = wrap_data_parallel(self.unet)
            if train_batch_size % gradient_accumulate_every:
                raise ValueError("train_batch_size must be divisible by gradient_accumulate_every")
            self.micro_batch = train_batch_size // gradient_accumulate_every
            self.gradient_accumulate_every = gradient_accumulate_every
            self.train_num_steps = train_num_steps
            self.save_and_sample_every = save_and_sample_every
            self.num_samples = num_samples
            self.amp = amp
            self.seed = seed
            self.guard = _MilestoneGuard(self, skip_nan_steps)
            self.last_saved = None  # (milestone, path) of the newest milestone saved or loaded by this object

            transform = ImageTransform(diffusion.image_size, center_crop=True, random_flip=augment_horizontal_flip, draft=jpeg_draft)
            self.dataset = ImageFolderDataset(folder, transform, seed=seed)
            self.sampler = ResumableBatchSampler(self.dataset, batch_size=self.micro_batch, shuffle=True, drop_last=True)
            if len(self.sampler) == 0:
                raise ValueError(f"{folder!r} has {len(self.dataset)} images: fewer than one batch of {self.micro_batch} per process")
            self.loader = paddle.io.DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=num_workers)

            self.opt = paddle.optimizer.AdamW(learning_rate=train_lr, parameters=self.unet.parameters(), beta1=0.9, beta2=0.99, grad_clip=nn.ClipGradByGlobalNorm(1.0))
            self.ema = EMAModel(self.unet.parameters(), decay=ema_decay)
            self.ema_unet = None
            self.scaler = paddle.amp.GradScaler() if amp and paddle.device.is_compiled_with_cuda() else None
            self.step, self.epoch, self.batches_in_epoch = 0, 0, 0
            self.logger = TrainLogger(self.results_folder, logging_steps, enabled=is_main_process(), total_steps=train_num_steps)
            self.logger.logger.info(describe_fast_ops(fast_state))
        except BaseException:
            self.close()
            raise

    def close(self):
        """Release the lock on ``results_folder`` (idempotent; :meth:`train` calls it when it returns or fails)."""
        run, self._run = getattr(self, "_run", None), None
        if run is not None:
            run.close()

    # -- checkpoints -------------------------------------------------------------------------
    def _path(self, milestone):
        return os.path.join(self.results_folder, f"model-{_check_milestone(milestone)}.pdparams")

    def newest_milestone_text(self):
        """The newest milestone file and how to resume from it, for messages (``"none yet"`` without one).

        The last one this object saved or loaded, else the highest ``model-N.pdparams`` in ``results_folder``.
        """
        if self.last_saved is not None:
            milestone, path = self.last_saved
        else:
            numbers = []
            for name in os.listdir(self.results_folder) if os.path.isdir(self.results_folder) else ():
                stem = name[len("model-"):-len(".pdparams")] if name.startswith("model-") and name.endswith(".pdparams") else ""
                if stem.isdigit():
                    numbers.append(int(stem))
            if not numbers:
                return "none yet"
            milestone = max(numbers)
            path = self._path(milestone)
        return f"{path} (resume with --load_milestone {milestone} / trainer.load({milestone!r}), e.g. with a lower --train_lr)"

    def save(self, milestone):
        """Write ``model-<milestone>.pdparams`` (``milestone``: int or ``"last"``); returns its path.

        Collective: call on every rank at the same point.  Every rank checks its weights first
        (NaN/inf anywhere: ``NonFiniteError``, nothing is written, older milestones stay as they
        are), every rank's RNG state is gathered, and rank 0 writes the file atomically (temporary
        file, fsync, rename, fsync of the folder).

        Raises:
            common.run_guard.NonFiniteError: the weights hold NaN/inf on some rank.
            ValueError: ``milestone`` is neither a non-negative int nor ``"last"``.
        """
        path = self._path(milestone)
        self.guard.check_weights(self.step, self.unet.parameters(), what=f"milestone {os.path.basename(path)}")
        rngs = gather_rng_states()  # collective: every rank's state, restored per rank by load()
        if is_main_process():
            state = {
                "model": self.unet.state_dict(),
                "ema": self.ema.state_dict(),
                "opt": optimizer_state(self.opt, self.unet.parameters()),
                "step": self.step,
                "epoch": self.epoch,
                "batches_in_epoch": self.batches_in_epoch,
                "rng": rngs,
                "config": dict(self.unet.config),
            }
            os.makedirs(self.results_folder, exist_ok=True)
            _save_file_atomically(state, path)
        barrier()
        self.last_saved = (_check_milestone(milestone), path)
        return path

    def load(self, milestone):
        """Restore everything saved by :meth:`save`; training continues from that step.

        Call on every rank; each rank restores its own RNG state (milestones written by older
        versions hold rank 0's only, which every rank then restores, with a warning).

        Raises:
            FileNotFoundError: no ``model-<milestone>.pdparams`` in ``results_folder``.
            ValueError: ``milestone`` is neither a non-negative int nor ``"last"``.
        """
        path = self._path(milestone)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"milestone {milestone}: {path!r} does not exist")
        state = paddle.load(path)
        self.unet.set_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        load_optimizer_state(self.opt, state["opt"], self.unet.parameters())
        self.step, self.epoch, self.batches_in_epoch = state["step"], state["epoch"], state["batches_in_epoch"]
        restore_rank_rng_state(state["rng"])
        self.last_saved = (_check_milestone(milestone), path)

    # -- sampling ----------------------------------------------------------------------------
    def ema_model(self):
        """A copy of the UNet holding the EMA weights (for sampling/saving)."""
        if self.ema_unet is None:
            self.ema_unet = UNet2DModel.from_config(self.unet.config)
            apply_fast_ops(self.ema_unet, self.fast_ops)
        self.ema_unet.set_state_dict(self.unet.state_dict())
        self.ema.copy_to(self.ema_unet.parameters())
        return self.ema_unet

    def sample_grid(self, milestone):
        """EMA samples as ``sample-<milestone>.png``; returns the path."""
        with preserve_rng_state():  # building the EMA copy and sampling must not shift training noise
            sampler = GaussianDiffusion(self.ema_model(), **self.diffusion.config)
            images = sampler.sample(self.num_samples, seed=self.seed)
        path = save_grid([im * 2 - 1 for im in images], os.path.join(self.results_folder, f"sample-{milestone}.png"), upscale=2)
        return path

    def save_pipeline(self, path=None):
        """Write the ``DDPMPipeline`` of the EMA weights (``diffusion.pipeline()`` of an EMA copy:
        UNet + ``DDPMScheduler`` with the betas) to ``path`` (default ``results_folder/pipeline``).

        Collective (every rank calls it, rank 0 writes).  The folder is written as
        ``<path>.tmp-<pid>``, fsynced and then swapped in, so an existing pipeline is never left
        half-overwritten.  Returns ``path``.
        """
        path = str(path or os.path.join(self.results_folder, "pipeline"))
        if is_main_process():
            tmp = f"{path}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                with preserve_rng_state():  # the EMA copy's construction draws from the training RNG
                    GaussianDiffusion(self.ema_model(), **self.diffusion.config).pipeline().save_pretrained(tmp)
                fsync_tree(tmp)
                replace_dir(tmp, path)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        barrier()
        return path

    # -- training ----------------------------------------------------------------------------
    def _batches(self):
        while True:
            self.sampler.set_epoch(self.epoch)
            self.dataset.set_epoch(self.epoch)
            self.sampler.skip_batches = self.batches_in_epoch
            for batch in self.loader:
                self.batches_in_epoch += 1
                yield batch["pixel_values"]
            self.epoch, self.batches_in_epoch = self.epoch + 1, 0

    def train(self):
        """Run until ``train_num_steps``, then save ``model-last``, the pipeline and a last sample grid.

        Returns the list of this call's per-step losses, each the mean over all ranks and over the
        ``gradient_accumulate_every`` micro-batches (the same list on every rank).  Releases the
        lock on ``results_folder`` when it returns or fails (a later call takes it again).

        Raises:
            common.run_guard.NonFiniteError: NaN/inf loss or gradient (beyond ``skip_nan_steps``)
                or weights; nothing is saved after the last good milestone.
            common.run_guard.TrainingInterrupted: SIGTERM/SIGINT, after saving ``model-last.pdparams``
                (a ``SystemExit`` with status ``128 + signal``).
            common.run_guard.OutputDirInUseError: a second call while another run took the folder.
        """
        if self._run is None:
            self._run = start_run(self.results_folder, None, arg_name="--results_folder")
        try:
            with self.guard:  # SIGTERM/SIGINT handlers for the duration of the loop
                return self._train()
        finally:
            self.close()

    def _train(self):
        batches = self._batches()
        losses = []
        amp_dtype = "float16" if self.scaler is not None else "bfloat16"
        params = list(self.unet.parameters())
        while self.step < self.train_num_steps:
            t0 = time.time()
            total = 0.0  # this rank's mean over the micro-batches
            for _ in range(self.gradient_accumulate_every):
                x = next(batches)
                with paddle.amp.auto_cast(enable=self.amp, dtype=amp_dtype):
                    loss = self.diffusion.training_losses(self.diffusion.model, x)["loss"] / self.gradient_accumulate_every
                (self.scaler.scale(loss) if self.scaler else loss).backward()
                total += float(loss)
            # NaN/inf guard and stop-signal check, identical on every rank, before the update
            if self.guard.check_step(self.step + 1, total, None if self.scaler else params):
                if self.scaler:
                    self.scaler.step(self.opt)
                    self.scaler.update()
                else:
                    self.opt.step()
            self.opt.clear_grad()
            self.ema.step(params)
            self.step += 1
            losses.append(mean_over_ranks(total))  # the step's loss over all ranks (the logger averages its window the same way)
            self.logger.step(self.step, total, lr=self.opt.get_lr(), num_images=self.micro_batch * self.gradient_accumulate_every * get_world_size(), extra={"sec_per_step": time.time() - t0})
            if self.step % self.save_and_sample_every == 0:
                milestone = self.step // self.save_and_sample_every
                self.save(milestone)
                if is_main_process():
                    self.logger.log_images("samples", Image.open(self.sample_grid(milestone)), self.step)
                barrier()
            if self.guard.stop_requested:  # SIGTERM/SIGINT on some rank: save at this step boundary, exit non-zero
                path = self.save(MILESTONE_LAST)
                self.guard.interrupted(self.step, f"{path} (resume with --load_milestone {MILESTONE_LAST})")
        self.save(MILESTONE_LAST)
        self.save_pipeline()
        if is_main_process() and (self.step == 0 or self.step % self.save_and_sample_every):
            self.logger.log_images("samples", Image.open(self.sample_grid(MILESTONE_LAST)), self.step)
        barrier()
        return losses
