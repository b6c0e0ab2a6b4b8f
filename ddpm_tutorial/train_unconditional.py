"""Train an unconditional pixel-space DDPM with ppdiffusers, written out as an explicit loop
(the diffusers ``train_unconditional`` recipe): UNet2DModel, ``DDPMScheduler.add_noise``, MSE on the
predicted noise (or on v / x0 with ``--prediction_type v_prediction|sample``), AdamW + warm-up, EMA, checkpoints
with exact resume, and a ``DDPMPipeline`` folder at the end.

    python ddpm_tutorial/train_unconditional.py --train_data_dir data/demo/faces --resolution 32 \
        --output_dir outputs/ddpm_faces --max_train_steps 1500

Outputs in ``--output_dir``: ``checkpoint-<step>/`` (training state), ``samples/step-<step>.png``,
VisualDL logs in ``logs/``, and the final pipeline (``unet/`` with EMA weights, ``scheduler/``,
``model_index.json``) that ``DDPMPipeline.from_pretrained(output_dir)`` loads.
"""
import argparse
import math
import time
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import paddle
import paddle.nn.functional as F
from ppdiffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from ppdiffusers.optimization import get_scheduler
from ppdiffusers.training_utils import EMAModel
from PIL import Image

from common.arg_checks import require_divisible, require_non_negative, require_positive, require_range, usage_errors
from common.checkpoint import gather_rng_states, load_checkpoint, load_optimizer_state, optimizer_state, preserve_rng_state, restore_rank_rng_state, save_checkpoint
from common.diffusion_utils import DDPM_SAMPLERS, ddpm_sampling_scheduler, min_snr_loss_weights
from common.distributed import (barrier, get_rank, get_world_size, init_distributed, is_main_process, seed_everything, seed_model_init, shutdown_distributed,
                                wrap_data_parallel)
from common.fast_ops import add_fast_ops_argument, apply_fast_ops, describe_fast_ops
from common.images import ImageFolderDataset, ImageTransform, ResumableBatchSampler, add_jpeg_draft_argument, sample_grid_path, save_grid
from common.logging_utils import TrainLogger
from common.run_guard import TrainingGuard, add_guard_arguments, start_run
from common.weights import load_state_dict_strict
from denoising_diffusion import build_unet, sigmoid_beta_schedule


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train an unconditional DDPM (UNet2DModel) on a folder of images.")
    # data
    p.add_argument("--train_data_dir", default="data/demo/faces", help="folder of training images (searched recursively)")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--center_crop", action="store_true", help="center crop (default: random crop)")
    p.add_argument("--random_flip", action="store_true", help="random horizontal flips")
    p.add_argument("--grayscale", action="store_true", help="train on one channel, the ITU-R 601-2 luma of each image (PIL's convert('L')): "
                   "a UNet with 1 input/output channel whose DDPMPipeline samples grayscale images; for grayscale data such as the "
                   "demo faces (R = G = B) the model then never has to learn to keep three channels equal")
    p.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader worker processes per process (0: read in the main process; "
                   "the 128 px GPU recipe needs 8 per GPU, see bench/README.md \"Readers\")")
    add_jpeg_draft_argument(p)
    # model (the tutorial's layout is --block_out_channels 128 128 256 256 512 512 --attention_levels 4)
    p.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--attention_levels", type=int, nargs="*", default=[2])
    p.add_argument("--layers_per_block", type=int, default=1)
    p.add_argument("--ddpm_num_steps", type=int, default=1000)
    p.add_argument("--ddpm_beta_schedule", default="linear", choices=["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"],
                   help="ppdiffusers' schedules, or 'sigmoid': lucidrains' sigmoid schedule (Jabri et al. 2022; "
                        "denoising_diffusion.sigmoid_beta_schedule), saved in the scheduler config as trained_betas")
    p.add_argument("--prediction_type", default="epsilon", choices=["epsilon", "v_prediction", "sample"], help="what the UNet predicts and the MSE is taken on: the noise eps (Ho et al. 2020, eq. 14), "
                   "the velocity v = sqrt(ab)*eps - sqrt(1-ab)*x0 (Salimans & Ho 2022, sec. 4) or x0 itself ('sample', unweighted; "
                   "it learns coarse structure first, which is what a few-minute CPU run can reach)")
    p.add_argument("--snr_gamma", type=float, default=None, help="Min-SNR-gamma loss weighting (Hang et al. 2023; diffusers' name): per-sample "
                   "MSE times min(SNR, gamma) in x0 space (for epsilon / v the equivalent factor); default: unweighted")
    # optimisation
    p.add_argument("--train_batch_size", type=int, default=32, help="per process")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--num_epochs", type=int, default=100)
    p.add_argument("--max_train_steps", type=int, default=None, help="total steps; wins over --num_epochs")
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--lr_scheduler", default="cosine", help="constant|constant_with_warmup|linear|cosine|...")
    p.add_argument("--lr_warmup_steps", type=int, default=50)
    p.add_argument("--adam_beta1", type=float, default=0.95)
    p.add_argument("--adam_beta2", type=float, default=0.999)
    p.add_argument("--adam_weight_decay", type=float, default=1e-6)
    p.add_argument("--adam_epsilon", type=float, default=1e-8)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    p.add_argument("--use_ema", action="store_true")
    p.add_argument("--ema_max_decay", type=float, default=0.999)
    p.add_argument("--ema_inv_gamma", type=float, default=1.0)
    p.add_argument("--ema_power", type=float, default=3 / 4)
    # outputs
    p.add_argument("--output_dir", default="outputs/ddpm_faces")
    p.add_argument("--logging_steps", type=int, default=10)
    p.add_argument("--save_images_steps", type=int, default=500, help="sample a grid every N steps (0: only at the end)")
    p.add_argument("--num_sample_images", type=int, default=16)
    p.add_argument("--ddpm_num_inference_steps", type=int, default=50, help="sampling steps of the grids, 1..ddpm_num_steps")
    p.add_argument("--ddpm_sampler", default="ddim", choices=list(DDPM_SAMPLERS),
                   help="sampler of the grids: ddim (deterministic; used only below ddpm_num_steps steps, else ancestral) or ddpm (ancestral DDPM "
                        "steps on a respaced grid, as diffusers' train_unconditional samples); the saved pipeline keeps the DDPMScheduler either way")
    p.add_argument("--checkpointing_steps", type=int, default=500, help="checkpoint every N steps (> 0; also at the end)")
    p.add_argument("--checkpoints_total_limit", type=int, default=2, help="keep the newest N checkpoints (0: all)")
    p.add_argument("--resume_from_checkpoint", default=None, help='"latest" or a checkpoint folder')
    p.add_argument("--seed", type=int, default=0)
    add_guard_arguments(p)  # --skip_nan_steps
    add_fast_ops_argument(p)  # --fast_ops (CPU speed-ups, on by default)
    args = p.parse_args(argv)
    with usage_errors(p):  # exit 2 naming the flag, before anything is loaded
        check_args(args)
    return args


def check_args(args):
    """Range-check the parsed arguments (steps, intervals, sizes > 0, lr > 0, ...).

    Raises:
        ValueError: the first argument out of range, named with its value, e.g.
            ``--checkpointing_steps must be > 0, got 0``.
    """
    require_positive(args, "resolution", "block_out_channels", "layers_per_block", "ddpm_num_steps", "train_batch_size", "gradient_accumulation_steps",
                     "num_epochs", "max_train_steps", "learning_rate", "adam_epsilon", "ema_inv_gamma", "ema_power", "logging_steps",
                     "num_sample_images", "checkpointing_steps", "snr_gamma")
    require_non_negative(args, "dataloader_num_workers", "lr_warmup_steps", "adam_weight_decay", "save_images_steps", "checkpoints_total_limit")
    for name in ("adam_beta1", "adam_beta2"):
        require_range(args, name, 0, 1, high_inclusive=False)
    require_range(args, "ema_max_decay", 0, 1)
    require_range(args, "ddpm_num_inference_steps", 1, args.ddpm_num_steps)
    levels = len(args.block_out_channels)
    bad = [i for i in args.attention_levels if not 0 <= i < levels]
    if bad:
        raise ValueError(f"--attention_levels {' '.join(map(str, args.attention_levels))}: levels {bad} out of range 0..{levels - 1} (one per --block_out_channels)")
    require_divisible(args.resolution, 2 ** (levels - 1), "--resolution", f"the UNet halves it {levels - 1} times, once per --block_out_channels level but the last")


# ITU-R 601-2 luma weights of R, G, B (the ones PIL's Image.convert("L") uses)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def to_grayscale(images):
    """RGB batch -> one-channel luma batch (``--grayscale``).

    Args:
        images: float tensor ``(B, 3, H, W)``, any range (training batches are in [-1, 1]).

    Returns:
        float tensor ``(B, 1, H, W)``, ``0.299 R + 0.587 G + 0.114 B`` (ITU-R 601-2, PIL's
        ``convert("L")`` weights). They sum to 1, so [-1, 1] stays [-1, 1] and a gray image
        (R = G = B) keeps its values.

    Raises:
        ValueError: ``images`` is not ``(B, 3, H, W)``.
    """
    if len(images.shape) != 4 or images.shape[1] != 3:
        raise ValueError(f"--grayscale expects RGB batches (B, 3, H, W), got shape {list(images.shape)}")
    weights = paddle.to_tensor(LUMA_WEIGHTS, dtype=images.dtype).reshape([1, 3, 1, 1])
    return (images * weights).sum(axis=1, keepdim=True)


def sampling_pipeline(unet, noise_scheduler, num_inference_steps, sampler="ddim"):
    """DDPMPipeline over ``unet`` for the sample grids: ``sampler`` "ddpm" keeps ancestral DDPM steps,
    "ddim" switches to DDIM when there are fewer inference than training steps
    (:func:`common.diffusion_utils.ddpm_sampling_scheduler`)."""
    scheduler = noise_scheduler
    if sampler == "ddpm" or num_inference_steps < noise_scheduler.config.num_train_timesteps:
        scheduler = ddpm_sampling_scheduler(noise_scheduler, sampler)
    pipeline = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def main(argv=None):
    """Parse ``argv``, lock ``--output_dir`` and train; returns the ``[(step, loss)]`` history.

    Raises:
        common.run_guard.OutputDirInUseError: another run uses ``--output_dir``.
        common.run_guard.NonFiniteError: NaN/inf loss or gradient (beyond ``--skip_nan_steps``).
        common.run_guard.TrainingInterrupted: SIGTERM/SIGINT, after saving a checkpoint (a ``SystemExit``).
    """
    args = parse_args(argv)
    init_distributed()
    with start_run(args.output_dir, args.resume_from_checkpoint) as run, TrainingGuard(args.output_dir, args.skip_nan_steps) as guard:
        return train(args, run, guard)


def train(args, run, guard):
    """The training loop of :func:`main` (``run`` from ``start_run``, ``guard`` a ``TrainingGuard``)."""
    world = get_world_size()

    # -- data ----------------------------------------------------------------------------------
    transform = ImageTransform(args.resolution, center_crop=args.center_crop, random_flip=args.random_flip, draft=args.jpeg_draft)
    dataset = ImageFolderDataset(args.train_data_dir, transform, seed=args.seed)
    sampler = ResumableBatchSampler(dataset, batch_size=args.train_batch_size, shuffle=True, drop_last=True)
    if len(sampler) == 0:
        raise ValueError(f"--train_data_dir {args.train_data_dir!r} has {len(dataset)} images: fewer than one batch of {args.train_batch_size} per process")
    loader = paddle.io.DataLoader(dataset, batch_sampler=sampler, num_workers=args.dataloader_num_workers)
    steps_per_epoch = math.ceil(len(sampler) / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_epochs * steps_per_epoch

    # -- models: the same initial weights on every rank, fixed by --seed -------------------------
    seed_model_init(args.seed)
    unet = build_unet(args.resolution, args.block_out_channels, args.attention_levels, args.layers_per_block, channels=1 if args.grayscale else 3)
    fast_ops = apply_fast_ops(unet, args.fast_ops)  # CPU: faster paths, same parameters and numbers
    if args.ddpm_beta_schedule == "sigmoid":  # not a ppdiffusers name (its "sigmoid" is another schedule): explicit betas
        noise_scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, trained_betas=sigmoid_beta_schedule(args.ddpm_num_steps).tolist(),
                                        prediction_type=args.prediction_type)
    else:
        noise_scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule, prediction_type=args.prediction_type)
    model = wrap_data_parallel(unet)
    ema = EMAModel(unet.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, inv_gamma=args.ema_inv_gamma, power=args.ema_power) if args.use_ema else None
    lr_scheduler = get_scheduler(args.lr_scheduler, learning_rate=args.learning_rate, num_warmup_steps=args.lr_warmup_steps, num_training_steps=max_train_steps)
    optimizer = paddle.optimizer.AdamW(
        learning_rate=lr_scheduler,
        parameters=unet.parameters(),
        beta1=args.adam_beta1,
        beta2=args.adam_beta2,
        weight_decay=args.adam_weight_decay,
        epsilon=args.adam_epsilon,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(args.max_grad_norm) if args.max_grad_norm > 0 else None,
    )
    scaler = paddle.amp.GradScaler() if args.mixed_precision == "fp16" else None
    logger = TrainLogger(args.output_dir, args.logging_steps, enabled=is_main_process(), total_steps=max_train_steps)
    logger.logger.info("UNet2DModel: %.2fM parameters; %d images; %d steps/epoch; %d steps", sum(p.numel().item() for p in unet.parameters()) / 1e6, len(dataset), steps_per_epoch, max_train_steps)
    logger.logger.info(describe_fast_ops(fast_ops))

    seed_everything(args.seed)  # noise / timestep draws: seed * world_size + rank (a resume restores each rank's saved stream)

    # -- resume --------------------------------------------------------------------------------
    global_step, epoch, batches_in_epoch = 0, 0, 0
    ckpt = run.resume
    if ckpt:
        state = load_checkpoint(ckpt)
        load_state_dict_strict(unet, state["model"], ckpt)  # another model's checkpoint fails here, keys listed
        load_optimizer_state(optimizer, state["optimizer"], unet.parameters())
        lr_scheduler.set_state_dict(state["lr_scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        global_step, epoch, batches_in_epoch = state["step"], state["epoch"], state["batches_in_epoch"]
        restore_rank_rng_state(state["rng"])  # each rank its own stream
        logger.logger.info("resumed from %s at step %d", ckpt, global_step)

    def ema_unet():
        """The UNet with EMA weights (a copy), or the raw UNet without EMA."""
        if ema is None:
            return unet
        copy = UNet2DModel.from_config(unet.config)
        copy.set_state_dict(unet.state_dict())
        ema.copy_to(copy.parameters())
        apply_fast_ops(copy, args.fast_ops)  # it samples the grids
        return copy

    def save(step):
        """Checkpoint ``step`` (all ranks call it: weight check, RNG states of every rank; rank 0 writes)."""
        guard.check_weights(step, unet.parameters())
        rngs = gather_rng_states()
        path = None
        if is_main_process():
            state = {
                "model": unet.state_dict(),
                "optimizer": optimizer_state(optimizer, unet.parameters()),
                "lr_scheduler": lr_scheduler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "step": step,
                "epoch": epoch,
                "batches_in_epoch": batches_in_epoch,
                "rng": rngs,
                "args": vars(args),
            }
            path = save_checkpoint(args.output_dir, step, state, save_total_limit=args.checkpoints_total_limit, protect=[ckpt] if ckpt else ())
        barrier()
        return path

    def save_samples(step):
        with preserve_rng_state():  # building the EMA copy and sampling must not shift training noise
            pipeline = sampling_pipeline(ema_unet(), noise_scheduler, args.ddpm_num_inference_steps, args.ddpm_sampler)
            images = pipeline(batch_size=args.num_sample_images, num_inference_steps=args.ddpm_num_inference_steps, generator=paddle.Generator().manual_seed(args.seed), output_type="pil").images
        path = save_grid(images, sample_grid_path(args.output_dir, step), upscale=2)
        logger.log_images("samples", Image.open(path), step)
        return path

    # -- training loop -------------------------------------------------------------------------
    amp_dtype = "float16" if args.mixed_precision == "fp16" else "bfloat16"
    unet.train()
    while global_step < max_train_steps:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        sampler.skip_batches = batches_in_epoch
        micro, micro_losses = 0, []  # this rank's losses of the current step's micro-batches
        t0 = time.time()
        for batch in loader:
            clean_images = batch["pixel_values"]
            if args.grayscale:
                clean_images = to_grayscale(clean_images)
            noise = paddle.randn(clean_images.shape, dtype=clean_images.dtype)
            timesteps = paddle.randint(0, noise_scheduler.config.num_train_timesteps, [clean_images.shape[0]], dtype="int64")
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)  # forward process q(x_t | x_0)
            with paddle.amp.auto_cast(enable=args.mixed_precision != "no", dtype=amp_dtype):
                model_output = model(noisy_images, timesteps).sample
            if args.prediction_type == "epsilon":
                target = noise
            elif args.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(clean_images, noise, timesteps)
            else:
                target = clean_images
            if args.snr_gamma is None:
                loss = F.mse_loss(model_output.astype("float32"), target)
            else:  # Min-SNR-gamma: per-sample MSE times the paper's weight for this target
                per_sample = ((model_output.astype("float32") - target) ** 2).reshape([target.shape[0], -1]).mean(axis=1)
                loss = (per_sample * min_snr_loss_weights(noise_scheduler, timesteps, args.snr_gamma, args.prediction_type)).mean()
            micro_losses.append(float(loss))
            loss = loss / args.gradient_accumulation_steps  # the step's gradient: the mean over its micro-batches
            (scaler.scale(loss) if scaler else loss).backward()
            batches_in_epoch += 1
            micro += 1
            if micro % args.gradient_accumulation_steps:
                continue
            # NaN/inf guard (all ranks agree; raises or skips) and stop-signal check, before the update
            if guard.check_step(global_step + 1, sum(micro_losses), None if scaler else unet.parameters()):
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
            lr_scheduler.step()
            optimizer.clear_grad()
            if ema is not None:
                ema.step(unet.parameters())
            global_step += 1
            # logged: the mean over the micro-batches and (every logging step) over the ranks, as DiT does
            logger.step(global_step, micro_losses, lr=optimizer.get_lr(), num_images=clean_images.shape[0] * args.gradient_accumulation_steps * world,
                        extra={"sec_per_step": time.time() - t0})
            t0, micro_losses = time.time(), []

            if global_step % args.checkpointing_steps == 0 or global_step == max_train_steps or guard.stop_requested:
                path = save(global_step)
                if guard.stop_requested:  # SIGTERM/SIGINT on some rank: saved, now exit non-zero
                    guard.interrupted(global_step, path)
            if args.save_images_steps and global_step % args.save_images_steps == 0 and global_step < max_train_steps:
                if is_main_process():
                    save_samples(global_step)
                barrier()
            if global_step >= max_train_steps:
                break
        else:
            if micro % args.gradient_accumulation_steps:
                optimizer.clear_grad()  # drop an incomplete accumulation at the epoch's end
                micro_losses = []
            epoch, batches_in_epoch = epoch + 1, 0

    # -- save the pipeline ---------------------------------------------------------------------
    if is_main_process():
        pipeline = DDPMPipeline(unet=ema_unet(), scheduler=noise_scheduler)
        pipeline.save_pretrained(args.output_dir)
        path = save_samples(global_step)
        logger.logger.info("saved DDPMPipeline to %s; samples in %s", args.output_dir, path)
    barrier()
    # every rank reports its weights so a multi-process run can be checked for drift
    checksum = sum(float(p.astype("float64").abs().sum()) for p in unet.parameters())
    print(f"[rank {get_rank()}] final weights checksum {checksum:.8e}", flush=True)
    logger.close()
    shutdown_distributed()
    return logger.history


if __name__ == "__main__":
    main()
