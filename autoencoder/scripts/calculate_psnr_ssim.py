"""PSNR and SSIM between two sets of images (originals vs. reconstructions); nothing downloaded.

Pairs are matched by sorted order of the two glob patterns (use the same file names in both
folders).  A reconstruction of another size (e.g. an f16 decoder's 2x output) is resized to
the original's size with bicubic filtering first.  Metrics come from scikit-image on RGB uint8
(``data_range=255``; SSIM with a uniform 7x7 window, averaged over the 3 channels).

Example::

    python scripts/calculate_psnr_ssim.py --imgs1 'originals/*.png' --imgs2 'recon/*.png'
"""
import argparse
import glob
import json
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # noqa: E401,E702 -- repo root, for common/
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # autoencoder/, for its vae_*.py modules
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import numpy as np
from PIL import Image

__all__ = ["psnr_ssim", "compare_globs"]


def psnr_ssim(img1, img2):
    """PSNR (dB) and SSIM of two RGB uint8 arrays ``(H, W, 3)`` of the same shape."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if img1.shape != img2.shape:
        raise ValueError(f"image shapes differ: {img1.shape} vs {img2.shape}")
    psnr = peak_signal_noise_ratio(img1, img2, data_range=255)
    ssim = structural_similarity(img1, img2, data_range=255, channel_axis=-1, win_size=min(7, min(img1.shape[:2]) // 2 * 2 - 1))
    return float(psnr), float(ssim)


def compare_globs(pattern1, pattern2):
    """Mean PSNR/SSIM over the pairs of two glob patterns.

    Returns ``{"psnr": float, "ssim": float, "num_images": int}``.

    Raises:
        ValueError: a pattern matches nothing, or the two match different counts.
    """
    files1, files2 = sorted(glob.glob(pattern1)), sorted(glob.glob(pattern2))
    if not files1 or not files2:
        raise ValueError(f"no images: --imgs1 {pattern1!r} matched {len(files1)}, --imgs2 {pattern2!r} matched {len(files2)}")
    if len(files1) != len(files2):
        raise ValueError(f"--imgs1 matched {len(files1)} files but --imgs2 matched {len(files2)}; they are paired by sorted order")
    scores = []
    for f1, f2 in zip(files1, files2):
        a = Image.open(f1).convert("RGB")
        b = Image.open(f2).convert("RGB")
        if b.size != a.size:
            b = b.resize(a.size, Image.BICUBIC)
        scores.append(psnr_ssim(np.asarray(a), np.asarray(b)))
    psnr, ssim = np.mean(scores, axis=0)
    return {"psnr": float(psnr), "ssim": float(ssim), "num_images": len(scores)}


def main():
    parser = argparse.ArgumentParser(description="Mean PSNR/SSIM between originals and reconstructions.")
    parser.add_argument("--imgs1", required=True, help="glob of the original images, e.g. 'originals/*.png'")
    parser.add_argument("--imgs2", required=True, help="glob of the reconstructions (same sorted order)")
    args = parser.parse_args()
    print(json.dumps(compare_globs(args.imgs1, args.imgs2)))


if __name__ == "__main__":
    main()
