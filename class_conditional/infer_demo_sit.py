"""Generate class-conditional images with a trained SiT (no ppdiffusers pipeline exists for SiT).

    python infer_demo_sit.py --model_path outputs/class_conditional_demo/sit/final --class_labels 0 1 2 \
        --mode ODE --sampling_method dopri5 --output result_sit.png
    python infer_demo_sit.py ... --mode SDE --sampling_method Euler --diffusion_form sigma --last_step Mean

``--model_path``: model folder (``final/``) or checkpoint folder with ``dit_ema/``; the transport
options must match training (``--path_type``, ``--prediction``).  Writes one PNG grid.
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse

from objective import decode_latents, load_model_folder, sample_latents, parse_cfg_channels
from transport import DIFFUSION_FORMS, create_transport
from common.fast_ops import add_fast_ops_argument, apply_fast_ops
from common.images import save_grid
from common.logging_utils import get_logger
from common.vae import load_vae

logger = get_logger("infer_sit")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True)
    p.add_argument("--vae_name_or_path", default="auto")
    p.add_argument("--class_labels", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--mode", choices=["ODE", "SDE"], default="ODE")
    p.add_argument("--sampling_method", default="dopri5", help="ODE: euler | heun | dopri5; SDE: Euler | Heun")
    p.add_argument("--num_sampling_steps", type=int, default=50, help="fixed-step count (ODE euler/heun, SDE)")
    p.add_argument("--cfg_channels", type=parse_cfg_channels, default=3,
                   help="latent channels guidance mixes: 3 = official DiT/SiT code (default), all = every channel")
    p.add_argument("--cfg_scale", type=float, default=4.0)
    p.add_argument("--path_type", default="Linear", choices=["Linear", "GVP", "VP"])
    p.add_argument("--prediction", default="velocity", choices=["velocity", "score", "noise"])
    p.add_argument("--sample_eps", type=float, default=None)
    p.add_argument("--diffusion_form", default="sigma", choices=list(DIFFUSION_FORMS))
    p.add_argument("--diffusion_norm", type=float, default=1.0)
    p.add_argument("--last_step", default="Mean", choices=["Mean", "Tweedie", "Euler", "None"])
    p.add_argument("--last_step_size", type=float, default=0.04)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="result_SiT.png")
    add_fast_ops_argument(p)  # --fast_ops (CPU speed-ups, on by default)
    args = p.parse_args()

    model, cfg = load_model_folder(args.model_path)
    apply_fast_ops(model, args.fast_ops)
    if cfg["model_type"] != "SiT":
        raise ValueError(f"--model_path {args.model_path!r} is a {cfg['model_type']} model; sample it with sample_ddp.py "
                         "(or export it with tools/convert_dit_to_ppdiffusers.py and use infer_demo_dit.py)")
    bad = [c for c in args.class_labels if not 0 <= c < cfg["num_classes"]]
    if bad:
        raise ValueError(f"--class_labels {bad} outside [0, {cfg['num_classes']})")
    transport = create_transport(args.path_type, args.prediction, None, None, args.sample_eps)
    sde = {"sampling_method": args.sampling_method, "diffusion_form": args.diffusion_form, "diffusion_norm": args.diffusion_norm,
           "last_step": None if args.last_step == "None" else args.last_step, "last_step_size": args.last_step_size}
    z = sample_latents(model, "SiT", args.class_labels, args.num_sampling_steps, args.cfg_scale, seed=args.seed, transport=transport,
                       sampler="sde" if args.mode == "SDE" else args.sampling_method, sde_options=sde if args.mode == "SDE" else None,
                       cfg_channels=args.cfg_channels)
    vae, _ = load_vae(args.vae_name_or_path)
    apply_fast_ops(vae, args.fast_ops)
    save_grid(list(decode_latents(vae, z)), args.output, nrow=len(args.class_labels), upscale=2)
    logger.info("classes %s (%s %s) -> %s", args.class_labels, args.mode, args.sampling_method, args.output)


if __name__ == "__main__":
    main()
