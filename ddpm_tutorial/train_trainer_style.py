"""Train a pixel-space DDPM the tutorial's compact way: ``Unet`` + ``GaussianDiffusion`` + ``Trainer``.

    python ddpm_tutorial/train_trainer_style.py --folder data/demo/faces --image_size 32 \
        --dim 32 --dim_mults 1 2 4 --train_num_steps 2000 --results_folder outputs/ddpm_trainer

Resume with ``--load_milestone N`` (reads ``results_folder/model-N.pdparams``).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))  # repo root, for common/
from common.cpu_env import apply_cpu_env  # noqa: E402

apply_cpu_env()  # before paddle is imported

from denoising_diffusion import GaussianDiffusion, Trainer, Unet  # noqa: E402


def parse_args():
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
    p.add_argument("--sampling_timesteps", type=int, default=50, help="< timesteps samples with DDIM")
    p.add_argument("--train_batch_size", type=int, default=32)
    p.add_argument("--train_lr", type=float, default=5e-4)
    p.add_argument("--train_num_steps", type=int, default=2000)
    p.add_argument("--gradient_accumulate_every", type=int, default=1)
    p.add_argument("--ema_decay", type=float, default=0.995)
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on GPU)")
    p.add_argument("--save_and_sample_every", type=int, default=500)
    p.add_argument("--num_samples", type=int, default=16)
    p.add_argument("--logging_steps", type=int, default=10)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load_milestone", type=int, default=None, help="resume from results_folder/model-N.pdparams")
    return p.parse_args()


def main():
    args = parse_args()
    # model + diffusion
    model = Unet(dim=args.dim, dim_mults=args.dim_mults, image_size=args.image_size, layers_per_block=args.layers_per_block, attention_levels=args.attention_levels)
    diffusion = GaussianDiffusion(model, image_size=args.image_size, timesteps=args.timesteps, sampling_timesteps=args.sampling_timesteps, objective=args.objective)
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
    )
    if args.load_milestone is not None:
        trainer.load(args.load_milestone)
    trainer.train()


if __name__ == "__main__":
    main()
