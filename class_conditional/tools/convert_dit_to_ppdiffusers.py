"""Export a trained DiT (EMA weights) to a ppdiffusers ``DiTPipeline`` folder.

    python tools/convert_dit_to_ppdiffusers.py --model_path output_trainer/DiT_XL_patch2_trainer/final \
        --vae_name_or_path stabilityai/sd-vae-ft-mse --output_dir ./DiT_XL_2_256 \
        --id2label_file tools/ImageNet_id2label.json

``--model_path`` is a DiT model folder (``model_config.json`` + ``model_state.pdparams``: the
``final/`` folder of a run) or a checkpoint folder holding one as ``dit_ema/``.  The output has
``transformer/`` (ppdiffusers ``Transformer2DModel``), ``vae/``, ``scheduler/`` (DDIM, the DiT
linear schedule) and ``model_index.json`` with ``id2label`` so that ``pipe.get_label_ids(["golden
retriever"])`` works.  Note ``DiTPipeline`` uses class id 1000 as the "no class" label for
guidance, so models exported for it need ``num_classes`` 1000 (the demo configs use 1000 too).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))  # repo root, for common/
from common.cpu_env import apply_cpu_env  # noqa: E402

apply_cpu_env()  # must run before paddle is imported

from class_conditional.models.export import to_transformer2d  # noqa: E402
from class_conditional.objective import load_model_folder  # noqa: E402
from common.logging_utils import get_logger  # noqa: E402
from common.vae import load_vae  # noqa: E402

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


def convert(model_path, output_dir, vae_name_or_path="auto", id2label_file=None):
    """Write the pipeline folder; returns ``output_dir``."""
    from ppdiffusers import DDIMScheduler, DiTPipeline

    model, cfg = load_model_folder(model_path)
    if cfg["model_type"] != "DiT":
        logger.warning("%s was trained as %s; DiTPipeline samples it with the DiT diffusion", model_path, cfg["model_type"])
    transformer = to_transformer2d(model, cfg)
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
    logger.info("wrote DiTPipeline to %s (transformer from %s, VAE: %s, %d labels)", output_dir, model_path, description, len(id2label))
    return output_dir


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="DiT model folder (final/) or checkpoint folder with dit_ema/")
    p.add_argument("--output_dir", default="./DiT_XL_2_256", help="pipeline folder to write")
    p.add_argument("--vae_name_or_path", default="auto", help="VAE the features were extracted with (auto | random | folder | hub id)")
    p.add_argument("--id2label_file", default=os.path.join(HERE, "ImageNet_id2label.json"), help="JSON {id: 'name, alias'}; tools/digits_id2label.json for the demo")
    args = p.parse_args()
    convert(args.model_path, args.output_dir, args.vae_name_or_path, args.id2label_file)


if __name__ == "__main__":
    main()
