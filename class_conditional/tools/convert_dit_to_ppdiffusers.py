"""Export a trained DiT (EMA weights), or an official DiT/SiT checkpoint, to a ppdiffusers
``DiTPipeline`` folder and this project's model folder.

    # a model this project trained
    python tools/convert_dit_to_ppdiffusers.py --model_path output_trainer/DiT_XL_patch2_trainer/final \
        --vae_name_or_path stabilityai/sd-vae-ft-mse --output_dir ./DiT_XL_2_256 \
        --id2label_file tools/ImageNet_id2label.json
    # published weights (facebookresearch/DiT DiT-XL-2-256x256.pt; .pt needs torch installed,
    # .safetensors/.npz/.pdparams with the official names do not)
    python tools/convert_dit_to_ppdiffusers.py --model_weights DiT-XL-2-256x256.pt --model_name DiT-XL/2 \
        --image_size 256 --vae_name_or_path stabilityai/sd-vae-ft-ema --output_dir ./DiT_XL_2_256
    python tools/convert_dit_to_ppdiffusers.py --model_weights SiT-XL-2-256x256.pt --model_name SiT-XL/2 --output_dir ./SiT_XL_2_256

Official checkpoints are written as a project model folder to ``<output_dir>/dit_model/``
(``model_config.json`` + ``model_state.pdparams``), which ``infer_demo_sit.py --model_path``,
``sample_ddp.py --model_path`` and ``--pretrained_model_name_or_path`` of both training scripts
take; DiT checkpoints also become the pipeline in ``<output_dir>`` (SiT has no ppdiffusers
pipeline).  A ``.pt`` file is a pickle: it is opened weights-only (see ``common/weights.py``).

``--model_path`` is a DiT model folder (``model_config.json`` + ``model_state.pdparams``: the
``final/`` folder of a run) or a checkpoint folder holding one as ``dit_ema/``.  The output has
``transformer/`` (ppdiffusers ``Transformer2DModel``), ``vae/``, ``scheduler/`` (DDIM, the DiT
linear schedule) and ``model_index.json`` with ``id2label`` so that ``pipe.get_label_ids(["golden
retriever"])`` works.  Note ``DiTPipeline`` uses class id 1000 as the "no class" label for
guidance, so models exported for it need ``num_classes`` 1000 (the demo configs use 1000 too).
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # noqa: E401,E702 -- repo root, for common/
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # class_conditional/, for its sibling modules
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse
import json

from models.export import export_error, to_transformer2d
from objective import load_model_folder, load_official_checkpoint, save_model_folder
from common.logging_utils import get_logger
from common.vae import load_vae

HERE = os.path.dirname(os.path.abspath(__file__))
logger = get_logger("convert")


def read_id2label(path, num_classes):
    """``{"0": "name, alias", ...}`` from a JSON file; ids must be below ``num_classes``.

    Raises:
        FileNotFoundError / ValueError: missing file, not a dict, or an id out of range.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--id2label_file {path!r} does not exist")
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict) and isinstance(data.get("id2label"), dict):  # {"id2label": {...}} wrapper
        data = data["id2label"]
    if not isinstance(data, dict) or not data:
        raise ValueError(f"--id2label_file {path!r} must hold a non-empty {{id: names}} object")
    bad = [k for k in data if not str(k).isdigit() or int(k) >= num_classes]
    if bad:
        raise ValueError(f"--id2label_file {path!r}: ids {bad[:5]} are not class ids below num_classes={num_classes}")
    return {str(k): str(v) for k, v in data.items()}


def convert(model_path, output_dir, vae_name_or_path="auto", id2label_file=None, model_weights=None, model_name=None, image_size=256):
    """Write the pipeline folder (DiT) and, for official weights, ``<output_dir>/dit_model/``.

    Give either ``model_path`` (a project model folder) or ``model_weights`` + ``model_name``
    (an official checkpoint).  Returns ``output_dir``.

    Raises:
        ValueError: both or neither source given; weights that do not fit (keys listed).
    """
    from ppdiffusers import DDIMScheduler, DiTPipeline

    if bool(model_path) == bool(model_weights):
        raise ValueError("give exactly one of --model_path (a model this project trained) or --model_weights + --model_name (official weights)")
    if model_weights:
        if not model_name:
            raise ValueError("--model_weights needs --model_name (e.g. DiT-XL/2 or SiT-XL/2)")
        model, cfg = load_official_checkpoint(model_weights, model_name, image_size)
        save_model_folder(model, cfg, os.path.join(output_dir, "dit_model"))
        logger.info("wrote the %s model folder %s", model_name, os.path.join(output_dir, "dit_model"))
        source = model_weights
        if cfg["model_type"] == "SiT":
            logger.info("SiT has no ppdiffusers pipeline: sample it with infer_demo_sit.py --model_path %s", os.path.join(output_dir, "dit_model"))
            return output_dir
    else:
        model, cfg = load_model_folder(model_path)
        source = model_path
    if cfg["model_type"] != "DiT":
        logger.warning("%s was trained as %s; DiTPipeline samples it with the DiT diffusion", source, cfg["model_type"])
    transformer = to_transformer2d(model, cfg)
    err, scale = export_error(model, transformer, cfg)
    if cfg.get("downscale_freq_shift", 0) != 1:
        logger.warning("%s uses the official DiT timestep embedding (downscale_freq_shift 0); DiTPipeline's Transformer2DModel "
                       "hard-codes shift 1, so the exported transformer differs from the trained model by up to %.3g "
                       "(output scale %.3g) on a probe batch. Sample with sample_ddp.py / infer_demo_sit.py for the exact "
                       "function, or train with \"downscale_freq_shift\": 1 for an exact export.", source, err, scale)
    else:
        logger.info("exported transformer matches the trained model to %.2g (output scale %.3g)", err, scale)
    vae, description = load_vae(vae_name_or_path)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True)
    id2label = read_id2label(id2label_file or os.path.join(HERE, "ImageNet_id2label.json"), cfg["num_classes"])
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler, id2label=id2label)
    pipe.save_pretrained(output_dir)
    index_path = os.path.join(output_dir, "model_index.json")
    with open(index_path) as f:
        index = json.load(f)
    index["id2label"] = id2label
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)
    logger.info("wrote DiTPipeline to %s (transformer from %s, VAE: %s, %d labels)", output_dir, source, description, len(id2label))
    return output_dir


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default=None, help="DiT model folder (final/) or checkpoint folder with dit_ema/")
    p.add_argument("--model_weights", default=None, help="official DiT/SiT checkpoint (.pt needs torch; .safetensors/.npz/.pdparams)")
    p.add_argument("--model_name", default=None, help="with --model_weights: DiT-XL/2 | DiT-L/4 | DiT-B/4 | DiT-S/4 | DiT-S/2 | SiT-XL/2")
    p.add_argument("--image_size", type=int, default=256, choices=[256, 512], help="with --model_weights: image size the checkpoint was trained at")
    p.add_argument("--output_dir", default="./DiT_XL_2_256", help="pipeline folder to write")
    p.add_argument("--vae_name_or_path", default="auto", help="VAE the features were extracted with (auto | random | folder | hub id)")
    p.add_argument("--id2label_file", default=os.path.join(HERE, "ImageNet_id2label.json"), help="JSON {id: 'name, alias'}; tools/digits_id2label.json for the demo")
    args = p.parse_args()
    convert(args.model_path, args.output_dir, args.vae_name_or_path, args.id2label_file, args.model_weights, args.model_name, args.image_size)


if __name__ == "__main__":
    main()
