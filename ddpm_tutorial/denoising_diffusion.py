"""The tutorial's compact style (``Unet`` + ``GaussianDiffusion`` + ``Trainer``), built on ppdiffusers.

This mirrors how the ``denoising_diffusion_pytorch`` package is used in the tutorial::

    model = Unet(dim=32, dim_mults=(1, 2, 4))
    diffusion = GaussianDiffusion(model, image_size=32, timesteps=1000)
    trainer = Trainer(diffusion, "data/demo/faces", train_batch_size=32, train_lr=5e-4,
                      train_num_steps=2000, ema_decay=0.995, save_and_sample_every=500)
    trainer.train()
    images = diffusion.sample(batch_size=16)   # (16, 3, 32, 32) float32 in [0, 1]

but the network is a ppdiffusers ``UNet2DModel`` and noising/sampling use ppdiffusers'
``DDPMScheduler`` / ``DDIMScheduler``, so the result also saves as a ``DDPMPipeline``.
"""
import os
import time

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from ppdiffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from ppdiffusers.training_utils import EMAModel
from PIL import Image

from common.checkpoint import get_rng_state, load_optimizer_state, optimizer_state, preserve_rng_state, set_rng_state
from common.distributed import barrier, get_world_size, init_distributed, is_main_process, seed_everything, wrap_data_parallel
from common.images import ImageFolderDataset, ImageTransform, ResumableBatchSampler, save_grid
from common.logging_utils import TrainLogger

__all__ = ["build_unet", "Unet", "GaussianDiffusion", "Trainer"]


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


class GaussianDiffusion(nn.Layer):
    """DDPM (Ho et al. 2020, arXiv 2006.11239) around a ``UNet2DModel``.

    Training objective: sample ``t ~ U{0..T-1}``, ``eps ~ N(0, I)``,
    ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (``DDPMScheduler.add_noise``) and regress with
    MSE, by ``objective`` (the tutorial package's names): ``"pred_noise"`` the noise eps (Ho et al.
    eq. 14, "L_simple"), ``"pred_x0"`` the clean image x_0, ``"pred_v"`` the velocity
    ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0`` (Salimans & Ho 2022, arXiv 2202.00512, sec. 4).
    The scheduler's ``prediction_type`` follows, so sampling reads the output the same way.

    Args:
        model: ``UNet2DModel`` (possibly wrapped in ``paddle.DataParallel``) taking ``(x_t, t)``.
        image_size: side in pixels of the images it models.
        timesteps: number of diffusion steps T.
        sampling_timesteps: steps used by :meth:`sample`; fewer than ``timesteps`` uses DDIM.
        beta_schedule: ``"linear"`` (Ho et al.) or ``"squaredcos_cap_v2"`` (cosine, Nichol & Dhariwal).
        objective: ``"pred_noise"`` | ``"pred_x0"`` | ``"pred_v"``.

    Raises:
        ValueError: an unknown ``objective``.
    """

    def __init__(self, model, image_size, timesteps=1000, sampling_timesteps=None, beta_schedule="linear", objective="pred_noise"):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective {objective!r}: expected one of {sorted(OBJECTIVES)}")
        self.objective = objective
        self.model = model
        self.image_size = image_size
        self.num_timesteps = timesteps
        self.sampling_timesteps = sampling_timesteps or timesteps
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=timesteps, beta_schedule=beta_schedule, prediction_type=OBJECTIVES[objective])

    @property
    def unet(self):
        """The bare ``UNet2DModel`` (unwrapped from DataParallel)."""
        return getattr(self.model, "_layers", self.model)

    def training_losses(self, model, x_start, model_kwargs=None):
        """``{"loss": scalar MSE}`` for a batch ``x_start`` (B, C, H, W) float32 in [-1, 1]."""
        noise = paddle.randn(x_start.shape, dtype=x_start.dtype)
        timesteps = paddle.randint(0, self.num_timesteps, [x_start.shape[0]], dtype="int64")
        noisy = self.noise_scheduler.add_noise(x_start, noise, timesteps)
        model_output = model(noisy, timesteps, **(model_kwargs or {})).sample
        if self.objective == "pred_noise":
            target = noise
        elif self.objective == "pred_x0":
            target = x_start
        else:
            target = self.noise_scheduler.get_velocity(x_start, noise, timesteps)
        return {"loss": F.mse_loss(model_output.astype("float32"), target.astype("float32"))}

    def forward(self, img):
        """Loss for images ``img`` (B, C, H, W) float32 in [0, 1] (the tutorial's convention)."""
        return self.training_losses(self.model, img * 2.0 - 1.0)["loss"]

    def scheduler_for_sampling(self):
        """DDPM with all steps, or DDIM when ``sampling_timesteps < timesteps``."""
        if self.sampling_timesteps < self.num_timesteps:
            return DDIMScheduler.from_config(self.noise_scheduler.config)
        return self.noise_scheduler

    @paddle.no_grad()
    def sample(self, batch_size=16, seed=None):
        """Generate ``batch_size`` images: float32 tensor (B, C, H, W) in [0, 1]."""
        pipeline = DDPMPipeline(unet=self.unet, scheduler=self.scheduler_for_sampling())
        pipeline.set_progress_bar_config(disable=True)
        generator = paddle.Generator().manual_seed(seed) if seed is not None else None
        was_training = self.unet.training
        self.unet.eval()
        images = pipeline(batch_size=batch_size, num_inference_steps=self.sampling_timesteps, generator=generator, output_type="np").images
        self.unet.train(was_training)
        return paddle.to_tensor(np.asarray(images).transpose(0, 3, 1, 2).astype("float32"))


class Trainer:
    """The tutorial's one-object training loop.

    Trains ``diffusion`` on the images below ``folder`` (resized + center-cropped to the
    diffusion's ``image_size``, random horizontal flips).  Every ``save_and_sample_every`` steps
    rank 0 writes ``results_folder/model-N.pdparams`` (milestone N = step // save_and_sample_every:
    model, EMA, optimizer, step, data position, RNG) and ``sample-N.png`` (EMA samples).

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
        logging_steps: console/VisualDL interval.
    Raises:
        FileNotFoundError / ValueError: a missing or image-less ``folder`` (from ``ImageFolderDataset``).
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
    ):
        init_distributed()
        seed_everything(seed)
        self.diffusion = diffusion
        self.unet = diffusion.unet
        diffusion.model = wrap_data_parallel(self.unet)
        if train_batch_size % gradient_accumulate_every:
            raise ValueError("train_batch_size must be divisible by gradient_accumulate_every")
        self.micro_batch = train_batch_size // gradient_accumulate_every
        self.gradient_accumulate_every = gradient_accumulate_every
        self.train_num_steps = train_num_steps
        self.save_and_sample_every = save_and_sample_every
        self.num_samples = num_samples
        self.results_folder = results_folder
        self.amp = amp
        self.seed = seed

        transform = ImageTransform(diffusion.image_size, center_crop=True, random_flip=augment_horizontal_flip)
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
        self.logger = TrainLogger(results_folder, logging_steps, enabled=is_main_process(), total_steps=train_num_steps)
        if is_main_process():
            os.makedirs(results_folder, exist_ok=True)

    # -- checkpoints -------------------------------------------------------------------------
    def _path(self, milestone):
        return os.path.join(self.results_folder, f"model-{milestone}.pdparams")

    def save(self, milestone):
        """Write ``model-<milestone>.pdparams`` atomically (rank 0 only)."""
        if not is_main_process():
            return
        state = {
            "model": self.unet.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": optimizer_state(self.opt, self.unet.parameters()),
            "step": self.step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "rng": get_rng_state(),
            "config": dict(self.unet.config),
        }
        tmp = self._path(milestone) + ".tmp"
        paddle.save(state, tmp)
        os.replace(tmp, self._path(milestone))

    def load(self, milestone):
        """Restore everything saved by :meth:`save`; training continues from that step.

        Raises:
            FileNotFoundError: no ``model-<milestone>.pdparams`` in ``results_folder``.
        """
        path = self._path(milestone)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"milestone {milestone}: {path!r} does not exist")
        state = paddle.load(path)
        self.unet.set_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        load_optimizer_state(self.opt, state["opt"], self.unet.parameters())
        self.step, self.epoch, self.batches_in_epoch = state["step"], state["epoch"], state["batches_in_epoch"]
        set_rng_state(state["rng"])

    # -- sampling ----------------------------------------------------------------------------
    def ema_model(self):
        """A copy of the UNet holding the EMA weights (for sampling/saving)."""
        if self.ema_unet is None:
            self.ema_unet = UNet2DModel.from_config(self.unet.config)
        self.ema_unet.set_state_dict(self.unet.state_dict())
        self.ema.copy_to(self.ema_unet.parameters())
        return self.ema_unet

    def sample_grid(self, milestone):
        """EMA samples as ``sample-<milestone>.png``; returns the path."""
        with preserve_rng_state():  # building the EMA copy and sampling must not shift training noise
            sampler = GaussianDiffusion(self.ema_model(), self.diffusion.image_size, self.diffusion.num_timesteps, self.diffusion.sampling_timesteps,
                                        beta_schedule=self.diffusion.noise_scheduler.config.beta_schedule, objective=self.diffusion.objective)
            images = sampler.sample(self.num_samples, seed=self.seed)
        path = save_grid([im * 2 - 1 for im in images], os.path.join(self.results_folder, f"sample-{milestone}.png"), upscale=2)
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
        """Run until ``train_num_steps``; returns the list of per-step losses of this call."""
        batches = self._batches()
        losses = []
        amp_dtype = "float16" if self.scaler is not None else "bfloat16"
        while self.step < self.train_num_steps:
            t0 = time.time()
            total = 0.0
            for _ in range(self.gradient_accumulate_every):
                x = next(batches)
                with paddle.amp.auto_cast(enable=self.amp, dtype=amp_dtype):
                    loss = self.diffusion.training_losses(self.diffusion.model, x)["loss"] / self.gradient_accumulate_every
                (self.scaler.scale(loss) if self.scaler else loss).backward()
                total += float(loss)
            if self.scaler:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
            self.opt.clear_grad()
            self.ema.step(self.unet.parameters())
            self.step += 1
            losses.append(total)
            self.logger.step(self.step, total, lr=self.opt.get_lr(), num_images=self.micro_batch * self.gradient_accumulate_every * get_world_size(), extra={"sec_per_step": time.time() - t0})
            if self.step % self.save_and_sample_every == 0:
                milestone = self.step // self.save_and_sample_every
                self.save(milestone)
                if is_main_process():
                    self.logger.log_images("samples", Image.open(self.sample_grid(milestone)), self.step)
                barrier()
        return losses
