"""rFID: Frechet distance between InceptionV3 pool features of two image folders (originals and
reconstructions), ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Heusel et al. 2017).

The network is paddle.vision's ImageNet InceptionV3 (2048-d average-pool features, inputs
resized to 299x299).  Its weights are read from ``--inception_weights`` (a local
``inception_v3.pdparams``) or, if not given, downloaded from paddle's model URL -- which needs a
network; without either the script stops with a clear error.  The numbers are comparable
between runs of this script, not to FIDs computed with the TensorFlow Inception graph.

Example::

    python scripts/fid_score.py originals/ recon/ --inception_weights inception_v3.pdparams
"""
import argparse
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # noqa: E401,E702 -- repo root, for common/
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # autoencoder/, for its vae_*.py modules
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import numpy as np
from PIL import Image

INCEPTION_URL = "https://paddle-hapi.bj.bcebos.com/models/inception_v3.pdparams"


def load_inception(weights=None):
    """paddle.vision InceptionV3 feature extractor (eval, 2048-d pooled output).

    Raises:
        FileNotFoundError: ``weights`` given but missing.
        RuntimeError: no ``weights`` and the download failed (message says what to pass).
    """
    import paddle
    from paddle.vision.models import inception_v3

    if weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"--inception_weights {weights!r} does not exist (expected paddle.vision inception_v3.pdparams)")
        path = weights
    else:
        from paddle.utils.download import get_weights_path_from_url

        try:
            path = get_weights_path_from_url(INCEPTION_URL)
        except Exception as e:
            raise RuntimeError(f"FID needs InceptionV3 weights: pass --inception_weights PATH (download of {INCEPTION_URL} failed: {type(e).__name__}: {e})") from None
    net = inception_v3(pretrained=False, num_classes=-1, with_pool=True)
    state = paddle.load(path)
    missing = [k for k in net.state_dict() if k not in state]
    if missing:
        raise ValueError(f"{path!r} is not an InceptionV3 state dict (missing {missing[:3]} ...)")
    net.set_state_dict({k: v for k, v in state.items() if k in net.state_dict()})
    net.eval()
    return net


def folder_features(net, folder, batch_size=32):
    """``(N, 2048)`` float64 features of the images under ``folder``."""
    import paddle

    from common.images import list_images

    paths = list_images(folder)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    feats = []
    for i in range(0, len(paths), batch_size):
        batch = []
        for p in paths[i:i + batch_size]:
            arr = np.asarray(Image.open(p).convert("RGB").resize((299, 299), Image.BICUBIC), np.float32).transpose(2, 0, 1) / 255.0
            batch.append((arr - mean) / std)
        with paddle.no_grad():
            feats.append(net(paddle.to_tensor(np.stack(batch))).reshape([len(batch), -1]).numpy().astype(np.float64))
    return np.concatenate(feats)


def frechet_distance(f1, f2):
    """Frechet distance between Gaussians fitted to feature rows ``f1``, ``f2`` ``(N, D)``."""
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        eps = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eps).dot(s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def main():
    parser = argparse.ArgumentParser(description="rFID between two image folders.")
    parser.add_argument("path", nargs=2, help="two image folders (originals, reconstructions)")
    parser.add_argument("--inception_weights", default=None, help="local paddle.vision inception_v3.pdparams (default: download)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="paddle device, e.g. cpu or gpu")
    args = parser.parse_args()
    import paddle

    paddle.set_device(args.device)
    net = load_inception(args.inception_weights)
    f1, f2 = (folder_features(net, p, args.batch_size) for p in args.path)
    if min(len(f1), len(f2)) < 2:
        raise ValueError("FID needs at least 2 images per folder (and many more for a meaningful value)")
    print(f"FID: {frechet_distance(f1, f2):.4f}")


if __name__ == "__main__":
    main()
