"""Train a pixel-space DDPM the tutorial's compact way: ``Unet`` + ``GaussianDiffusion`` + ``Trainer``.

    python ddpm_tutorial/train_trainer_style.py --folder data/demo/faces --image_size 32 \
        --dim 32 --dim_mults 1 2 4 --train_num_steps 2000 --results_folder outputs/ddpm_trainer

``--seed`` fixes the initial weights (the same on every rank) and the training draws (rank r uses
``seed * world_size + r``).  Every ``--save_and_sample_every`` steps it writes ``model-N.pdparams`` and
``sample-N.png``; at the end ``model-last.pdparams`` and the ``DDPMPipeline`` folder ``pipeline/``.
Resume with ``--load_milestone N`` (reads ``results_folder/model-N.pdparams``) or ``--load_milestone last``.
A NaN/inf loss or gradient stops the run with an error naming the step (nothing saved after the last
good milestone; ``--skip_nan_steps N`` skips a few), SIGTERM/SIGINT saves ``model-last.pdparams`` at the
next step and exits with ``128 + signal``, and a second run into the same ``--results_folder`` fails
at start (lock file ``.run.lock``).
"""
import argparse
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

from common.arg_checks import require_non_negative, require_positive, require_range, usage_errors
from common.distributed import get_rank, init_distributed, seed_model_init, shutdown_distributed
from common.fast_ops import add_fast_ops_argument
from common.images import add_jpeg_draft_argument
from common.run_guard import add_guard_arguments
from denoising_diffusion import MILESTONE_LAST, GaussianDiffusion, Trainer, Unet


def milestone_arg(value):
    """``--load_milestone`` values: a non-negative integer N or ``last``."""
    if value == MILESTONE_LAST:
        return value
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a milestone number N >= 0 or {MILESTONE_LAST!r}")
    return n


def parse_args(argv=None):
    """The command line (``argv``: list of strings, default ``sys.argv[1:]``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folder", default="data/demo/faces", help="folder of training images")
    p.add_argument("--results_folder", default="outputs/ddpm_trainer")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--dim", type=int, default=32, help="channels of the first UNet level")
    p.add_argument("--dim_mults", type=int, nargs="+", default=[1, 2, 4], help="channel multiplier per level")
    p.add_argument("--attention_levels", type=int, nargs="*", default=[2], help="levels with self-attention")
    p.add_argument("--layers_per_block", type=int, default=1)
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--objective", default="pred_noise", choices=["pred_noise", "pred_x0", "pred_v"], help="what the UNet predicts (pred_x0 learns coarse structure first: used by the CPU demo)")
    p.add_argument("--beta_schedule", default="sigmoid", choices=["linear", "cosine", "sigmoid"], help="noise schedule (lucidrains' names; sigmoid is its default)")
    p.add_argument("--min_snr_loss_weight", action="store_true", help="clamp the SNR in the loss weight at --min_snr_gamma (Hang et al. 2023)")
    p.add_argument("--min_snr_gamma", type=float, default=5.0)
    p.add_argument("--sampling_timesteps", type=int, default=50, help="< timesteps samples with DDIM")
    p.add_argument("--ddim_sampling_eta", type=float, default=0.0, help="DDIM eta (0: deterministic)")
    p.add_argument("--train_batch_size", type=int, default=32)
    p.add_argument("--train_lr", type=float, default=5e-4)
    p.add_argument("--train_num_steps", type=int, default=2000)
    p.add_argument("--gradient_accumulate_every", type=int, default=1)
    p.add_argument("--ema_decay", type=float, default=0.995)
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on GPU)")
    p.add_argument("--save_and_sample_every", type=int, default=500)
    p.add_argument("--num_samples", type=int, default=16)
    p.add_argument("--logging_steps", type=int, default=10)
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes per process")
    add_jpeg_draft_argument(p)
    p.add_argument("--seed", type=int, default=0, help="initial weights (same on every rank) and training draws (seed * world_size + rank)")
    p.add_argument("--load_milestone", type=milestone_arg, default=None, help="resume from results_folder/model-N.pdparams (N, or 'last')")
    add_guard_arguments(p)  # --skip_nan_steps
    add_fast_ops_argument(p)  # --fast_ops (CPU speed-ups, on by default)
    args = p.parse_args(argv)
    with usage_errors(p):  # exit 2 naming the flag, before anything is built
        require_positive(args, "image_size", "dim", "dim_mults", "layers_per_block", "timesteps", "sampling_timesteps", "train_batch_size",
                         "train_lr", "train_num_steps", "gradient_accumulate_every", "save_and_sample_every", "num_samples", "logging_steps",
                         "min_snr_gamma")
        require_non_negative(args, "num_workers", "ddim_sampling_eta")
        require_range(args, "ema_decay", 0.0, 1.0)
        require_range(args, "sampling_timesteps", 1, args.timesteps)
    return args


def main(argv=None):
    """Parse ``argv``, build ``Unet`` + ``GaussianDiffusion`` + ``Trainer``, resume if asked, train.

    Returns the per-step losses (mean over ranks and micro-batches) and prints every rank's final
    weights checksum (``[rank N] final weights checksum X``).

    Raises:
        common.run_guard.OutputDirInUseError: another run uses ``--results_folder``.
        common.run_guard.NonFiniteError: NaN/inf loss or gradient (beyond ``--skip_nan_steps``).
        common.run_guard.TrainingInterrupted: SIGTERM/SIGINT, after saving ``model-last.pdparams`` (a ``SystemExit``).
    """
    args = parse_args(argv)
    init_distributed()
    # model + diffusion: the same initial weights on every rank, fixed by --seed
    # (the Trainer then seeds the training draws per rank: seed * world_size + rank)
    seed_model_init(args.seed)
    model = Unet(dim=args.dim, dim_mults=args.dim_mults, image_size=args.image_size, layers_per_block=args.layers_per_block, attention_levels=args.attention_levels)
    diffusion = GaussianDiffusion(
        model,
        image_size=args.image_size,
        timesteps=args.timesteps,
        sampling_timesteps=args.sampling_timesteps,
        objective=args.objective,
        beta_schedule=args.beta_schedule,
        ddim_sampling_eta=args.ddim_sampling_eta,
        min_snr_loss_weight=args.min_snr_loss_weight,
        min_snr_gamma=args.min_snr_gamma,
    )
    # trainer (data, optimizer, EMA, milestones)
    trainer = Trainer(
        diffusion,
        args.folder,
        train_batch_size=args.train_batch_size,
        train_lr=args.train_lr,
        train_num_steps=args.train_num_steps,
        gradient_accumulate_every=args.gradient_accumulate_every,
        ema_decay=args.ema_decay,
        amp=args.amp,
        save_and_sample_every=args.save_and_sample_every,
        num_samples=args.num_samples,
        results_folder=args.results_folder,
        seed=args.seed,
        logging_steps=args.logging_steps,
        num_workers=args.num_workers,
        skip_nan_steps=args.skip_nan_steps,
        jpeg_draft=args.jpeg_draft,
        fast_ops=args.fast_ops,
    )
    if args.load_milestone is not None:
        trainer.load(args.load_milestone)
    losses = trainer.train()
    # every rank reports its weights so a multi-process run can be checked for drift
    checksum = sum(float(p.astype("float64").abs().sum()) for p in trainer.unet.parameters())
    print(f"[rank {get_rank()}] final weights checksum {checksum:.8e}", flush=True)
    shutdown_distributed()
    return losses


if __name__ == "__main__":
    main()
