"""Write N samples per class as PNGs plus one ``.npz`` (``arr_0``: uint8 ``(K, H, W, 3)``) for FID
tools (the ADM evaluation suite reads this format).  Runs sharded under
``paddle.distributed.launch``: rank r samples images r, r + world, ... .

    python sample_ddp.py --model_path <final/ or checkpoint> --num_samples_per_class 5 \
        --sample_dir outputs/samples_dit --num_sampling_steps 25
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse

import numpy as np
from PIL import Image

from objective import decode_latents, load_model_folder, sample_latents, parse_cfg_channels
from transport import create_transport
from common.distributed import barrier, init_distributed
from common.fast_ops import add_fast_ops_argument, apply_fast_ops
from common.images import array_to_pil
from common.logging_utils import get_logger
from common.vae import load_vae

logger = get_logger("sample")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True)
    p.add_argument("--vae_name_or_path", default="auto")
    p.add_argument("--sample_dir", default="samples")
    p.add_argument("--num_samples_per_class", type=int, default=50)
    p.add_argument("--num_classes", type=int, default=None, help="sample classes 0..K-1 (default: the config's num_classes)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_sampling_steps", type=int, default=250)
    p.add_argument("--cfg_channels", type=parse_cfg_channels, default=3,
                   help="latent channels guidance mixes: 3 = official DiT/SiT code (default), all = every channel")
    p.add_argument("--cfg_scale", type=float, default=1.5)
    p.add_argument("--sampler", default=None, help="DiT: ddpm | ddim (default ddpm); SiT: euler | heun | dopri5 | sde (default dopri5)")
    p.add_argument("--path_type", default="Linear", choices=["Linear", "GVP", "VP"], help="SiT only")
    p.add_argument("--prediction", default="velocity", choices=["velocity", "score", "noise"], help="SiT only")
    p.add_argument("--global_seed", type=int, default=0)
    add_fast_ops_argument(p)  # --fast_ops (CPU speed-ups, on by default)
    args = p.parse_args()

    rank, world = init_distributed()
    model, cfg = load_model_folder(args.model_path)
    apply_fast_ops(model, args.fast_ops)
    changed = [f"--{name}" for name in ("path_type", "prediction") if getattr(args, name) != p.get_default(name)]
    if cfg["model_type"] == "DiT" and changed:
        raise ValueError(f"{', '.join(changed)}: SiT options, but {args.model_path!r} is a DiT model (sampled with the Gaussian diffusion)")
    vae, _ = load_vae(args.vae_name_or_path)
    apply_fast_ops(vae, args.fast_ops)
    k = args.num_classes or cfg["num_classes"]
    labels = [c for c in range(k) for _ in range(args.num_samples_per_class)]
    mine = list(range(rank, len(labels), world))
    transport = create_transport(args.path_type, args.prediction) if cfg["model_type"] == "SiT" else None
    sampler = args.sampler or ("ddpm" if cfg["model_type"] == "DiT" else "dopri5")
    os.makedirs(args.sample_dir, exist_ok=True)
    for start in range(0, len(mine), args.batch_size):
        idx = mine[start:start + args.batch_size]
        z = sample_latents(model, cfg["model_type"], [labels[i] for i in idx], args.num_sampling_steps, args.cfg_scale,
                           seed=args.global_seed * 100003 + idx[0], transport=transport, sampler=sampler,
                           cfg_channels=args.cfg_channels)
        for i, img in zip(idx, decode_latents(vae, z)):
            array_to_pil(img).save(os.path.join(args.sample_dir, f"{i:06d}_class{labels[i]}.png"))
    barrier()
    if rank == 0:
        files = sorted(f for f in os.listdir(args.sample_dir) if f.endswith(".png"))
        arr = np.stack([np.asarray(Image.open(os.path.join(args.sample_dir, f)).convert("RGB")) for f in files])
        path = os.path.join(args.sample_dir, f"samples_{arr.shape[0]}.npz")
        np.savez(path, arr_0=arr)
        logger.info("wrote %d PNGs and %s %s", len(files), path, arr.shape)


if __name__ == "__main__":
    main()
