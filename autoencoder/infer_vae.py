"""Reconstruct images with a trained AutoencoderKL and save PNGs.

Each image is resized to every ``--sizes`` value (default 256 and 512, as in the upstream
README), encoded, decoded with a sampled latent (``sample_posterior=True``) and saved as
``<name>_<size>.png``; an f8-encoder/f16-decoder VAE returns twice the input size.  With
``--output_dir`` of a folder of images, this also makes the reconstructions that
``scripts/calculate_psnr_ssim.py`` and ``scripts/fid_score.py`` compare (``--save_inputs``
writes the resized originals next to them).

Example::

    python infer_vae.py --model_name_or_path autoencoder_outputs/checkpoint-200000 \\
        --image ../data/demo/photos/astronaut.png --sizes 256 512 --output_dir recon
"""
import argparse
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import numpy as np
import paddle
from PIL import Image

from common.fast_ops import add_fast_ops_argument, apply_fast_ops
from common.images import array_to_pil, list_images, pil_to_tensor_array


def reconstruct(vae, image, size, sample_posterior=True, generator_seed=None):
    """Resize a PIL ``image`` to ``size x size``, encode and decode it.

    Returns ``(resized input PIL, reconstruction PIL)``; the reconstruction is
    ``size * f_dec / f_enc`` pixels wide.
    """
    resized = image.convert("RGB").resize((size, size), Image.BICUBIC)
    x = paddle.to_tensor(pil_to_tensor_array(resized)[None])
    if generator_seed is not None:
        paddle.seed(generator_seed)
    with paddle.no_grad():
        out = vae(x, sample_posterior=sample_posterior).sample
    return resized, array_to_pil(out[0].clip(-1, 1))


def main():
    parser = argparse.ArgumentParser(description="Reconstruct images with a trained AutoencoderKL.")
    parser.add_argument("--model_name_or_path", required=True, help="AutoencoderKL folder (a checkpoint-<step> or final/ of train_vae.py) or hub id")
    parser.add_argument("--image", nargs="+", required=True, help="image files and/or folders of images")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="encoder input sizes to try")
    parser.add_argument("--output_dir", default="vae_reconstructions")
    parser.add_argument("--sample_posterior", action=argparse.BooleanOptionalAction, default=True, help="decode a sampled latent (upstream setting) instead of the mean")
    parser.add_argument("--save_inputs", action="store_true", help="also save the resized inputs as <name>_<size>_input.png")
    parser.add_argument("--seed", type=int, default=0)
    add_fast_ops_argument(parser)  # --fast_ops (CPU speed-ups, on by default)
    args = parser.parse_args()

    from ppdiffusers import AutoencoderKL

    if args.model_name_or_path.startswith((".", "/")) and not os.path.exists(args.model_name_or_path):
        raise FileNotFoundError(f"--model_name_or_path {args.model_name_or_path!r} does not exist")
    vae = AutoencoderKL.from_pretrained(args.model_name_or_path)
    apply_fast_ops(vae, args.fast_ops)
    vae.eval()
    paths = []
    for item in args.image:
        if os.path.isdir(item):
            paths += list_images(item)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"--image {item!r} does not exist")
    os.makedirs(args.output_dir, exist_ok=True)
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        with Image.open(path) as im:
            image = im.convert("RGB")
        for size in args.sizes:
            resized, rec = reconstruct(vae, image, size, args.sample_posterior, args.seed)
            rec.save(os.path.join(args.output_dir, f"{name}_{size}.png"))
            if args.save_inputs:
                resized.save(os.path.join(args.output_dir, f"{name}_{size}_input.png"))
            err = np.abs(np.asarray(rec.resize(resized.size, Image.BICUBIC), np.float32) - np.asarray(resized, np.float32)).mean()
            print(f"{path}: {size}px -> {rec.width}x{rec.height}px, mean abs error {err:.2f}/255")
    print(f"saved to {args.output_dir}")


if __name__ == "__main__":
    main()
