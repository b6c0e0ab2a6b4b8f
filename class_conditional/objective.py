"""Glue shared by the train/infer/sample scripts: arguments of the objective (and which of them
apply to which ``model_type``), building the DiT diffusion or the SiT transport from a config,
sampling class-conditional latents with classifier-free guidance, and the DiT model folder format.

A DiT model folder (written at the end of training and into every checkpoint as ``dit_ema/``)
holds ``model_config.json`` (the validated config) and ``model_state.pdparams``.

Imported by plain name (``from objective import ...``) like its siblings ``diffusion``,
``models`` and ``transport``: the scripts' own folder is on ``sys.path``.
"""
import json
import os
from dataclasses import dataclass, field, fields
from typing import Optional

import paddle

from diffusion import create_diffusion
from models import DiT, load_model_config, model_kwargs
from transport import Sampler, create_transport
from common.fast_ops import FAST_OPS_HELP
from common.weights import load_state_dict_strict

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_CONFIG = "model_config.json"
MODEL_WEIGHTS = "model_state.pdparams"

__all__ = ["ObjectiveArguments", "SIT_ONLY_ARGUMENTS", "check_objective_arguments", "resolve_config_file", "build_objective", "build_transformer",
           "sample_latents", "parse_cfg_channels", "decode_latents", "save_model_folder", "load_model_folder", "load_official_checkpoint",
           "TrainModel", "HERE"]

# flags that only the SiT transport reads; given with a DiT config they would be silently ignored
SIT_ONLY_ARGUMENTS = ("path_type", "prediction", "loss_weight", "train_eps", "sample_eps", "sampling_method")
SIT_ODE_METHODS = ("euler", "heun", "dopri5")


@dataclass
class ObjectiveArguments:
    """Model/objective arguments shared by both training scripts (upstream names)."""

    config_file: str = field(default="config/DiT_XL_patch2.json", metadata={"help": "model config JSON (relative paths also looked up next to this script)"})
    feature_path: str = field(default="./data/fastdit_imagenet256", metadata={"help": "folder with imagenet256_features/ and imagenet256_labels/"})
    random_flip: bool = field(default=True, metadata={"help": "train on the stored horizontal flip half of the time (set False for digits/text, whose flips change meaning)"})
    vae_name_or_path: str = field(default="auto", metadata={"help": "VAE used to decode the sample grids: auto | random | folder | hub id"})
    num_inference_steps: int = field(default=25, metadata={"help": "sampling steps of the training-time sample grid (DiT: DDIM steps)"})
    cfg_scale: float = field(default=4.0, metadata={"help": "classifier-free guidance scale of the sample grid (1 = off)"})
    path_type: str = field(default="Linear", metadata={"help": "SiT path: Linear | GVP | VP"})
    prediction: str = field(default="velocity", metadata={"help": "SiT prediction: velocity | score | noise"})
    loss_weight: Optional[str] = field(default=None, metadata={"help": "SiT loss weight: None | velocity | likelihood"})
    train_eps: Optional[float] = field(default=None, metadata={"help": "SiT training time offset (default by path/prediction)"})
    sample_eps: Optional[float] = field(default=None, metadata={"help": "SiT sampling time offset (default by path/prediction)"})
    sampling_method: str = field(default="euler", metadata={"help": "SiT ODE method for the sample grid: euler | heun | dopri5"})
    pretrained_model_name_or_path: Optional[str] = field(default=None, metadata={"help": "fine-tune from this DiT/SiT model folder (a final/ folder, or the dit_model/ that tools/convert_dit_to_ppdiffusers.py writes from official weights)"})
    fast_ops: bool = field(default=True, metadata={"help": FAST_OPS_HELP})

    def __post_init__(self):
        if self.loss_weight in ("None", "none", ""):  # the launchers' LOSS_WEIGHT=None
            self.loss_weight = None


def check_objective_arguments(obj_args):
    """Read ``--config_file`` and check the objective flags against its ``model_type``, before
    anything is loaded.  With a DiT config, every SiT-only flag (:data:`SIT_ONLY_ARGUMENTS`) must
    keep its default (a changed one would be silently ignored); with a SiT config the transport
    options are validated by building the transport (cheap: no tensors).

    Returns:
        the validated config dict.

    Raises:
        FileNotFoundError: ``--config_file`` does not exist (here or next to this module).
        ValueError: a malformed config (named), a SiT-only flag changed with a DiT config (every
            such flag named), or an unknown ``--path_type`` / ``--prediction`` / ``--loss_weight`` /
            ``--sampling_method`` (named with the allowed values).
    """
    path = resolve_config_file(obj_args.config_file)
    cfg = load_model_config(path)
    if cfg["model_type"] == "DiT":
        defaults = {f.name: f.default for f in fields(ObjectiveArguments)}
        changed = [name for name in SIT_ONLY_ARGUMENTS if getattr(obj_args, name) != defaults[name]]
        if changed:
            given = ", ".join(f"--{name} {getattr(obj_args, name)}" for name in changed)
            raise ValueError(f"{given}: SiT (transport) option(s), but --config_file {obj_args.config_file!r} has model_type DiT, "
                             "which trains with the Gaussian diffusion and would ignore them; drop them or use a SiT config "
                             "(e.g. config/SiT_XL_patch2.json)")
    else:
        build_objective(cfg, obj_args)  # raises naming --path_type / --prediction / --loss_weight
        if obj_args.sampling_method not in SIT_ODE_METHODS:
            raise ValueError(f"--sampling_method must be one of {'|'.join(SIT_ODE_METHODS)} (the ODE of the training-time "
                             f"sample grid), got {obj_args.sampling_method!r}")
    return cfg


def resolve_config_file(path):
    """``path`` as given if it exists, else relative to the class_conditional folder.

    Raises:
        FileNotFoundError: neither exists.
    """
    if os.path.isfile(path):
        return path
    alt = os.path.join(HERE, path)
    if os.path.isfile(alt):
        return alt
    raise FileNotFoundError(f"--config_file {path!r} does not exist (also looked in {HERE})")


def build_objective(cfg, args):
    """``GaussianDiffusion`` (1000 linear steps, learned sigma) for ``model_type == "DiT"`` or a SiT
    ``Transport`` built from ``args`` (path_type, prediction, loss_weight, train_eps, sample_eps)."""
    if cfg["model_type"] == "DiT":
        return create_diffusion("", learn_sigma=cfg["learn_sigma"])
    return create_transport(args.path_type, args.prediction, args.loss_weight, args.train_eps, args.sample_eps)


def build_transformer(cfg, args):
    """The DiT/SiT network for training: fresh (DiT init, from the current paddle seed) or, with
    ``args.pretrained_model_name_or_path``, holding that model folder's weights.

    Raises:
        FileNotFoundError: the pretrained folder holds no model folder.
        ValueError: its config differs from ``cfg`` in a size or in ``downscale_freq_shift`` (both
            named), or its weights do not fit (keys listed).
    """
    model = DiT(**model_kwargs(cfg))
    path = getattr(args, "pretrained_model_name_or_path", None)
    if path:
        pretrained, pcfg = load_model_folder(path)
        keys = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "mlp_ratio", "num_classes",
                "learn_sigma", "downscale_freq_shift")
        diff = {k: (pcfg.get(k), cfg.get(k)) for k in keys if pcfg.get(k) != cfg.get(k)}
        if diff:
            raise ValueError(f"--pretrained_model_name_or_path {path!r} does not match --config_file: "
                             + ", ".join(f"{k} {a!r} (pretrained) vs {b!r}" for k, (a, b) in diff.items()))
        load_state_dict_strict(model, pretrained.state_dict(), path)
    return model


def _guided(model, cfg_scale, cfg_channels):
    if cfg_scale > 1.0:
        return lambda x, t, y: model.forward_with_cfg(x, t, y, cfg_scale, cfg_channels)
    return lambda x, t, y: model(x, t, y)


def parse_cfg_channels(text):
    """``--cfg_channels`` value: ``"all"`` -> ``None`` (guide every latent channel), else an int."""
    return None if str(text).lower() == "all" else int(text)


def sample_latents(model, model_type, labels, num_steps=25, cfg_scale=4.0, seed=0, transport=None, sampler="ddim",
                   sde_options=None, cfg_channels=3):
    """Sample latents for class ids ``labels`` (list of ints) with classifier-free guidance.

    Args:
        model: a :class:`DiT` (eval mode is set here and restored after).
        model_type: ``"DiT"`` (``sampler``: ``ddim`` = DDIM ``num_steps`` steps, ``ddpm`` =
            ancestral sampling on ``num_steps`` respaced steps) or ``"SiT"`` (``sampler``:
            ``euler``/``heun``/``dopri5`` ODE, or ``sde`` with ``sde_options`` for
            :meth:`Sampler.sample_sde`).
        transport: the SiT ``Transport`` (required for SiT).
        cfg_channels: latent channels that guidance mixes (see :meth:`DiT.forward_with_cfg`):
            3 = the official DiT/SiT sampling code, ``None`` = all channels (``DiTPipeline``).

    Returns:
        float32 tensor ``(len(labels), C, s, s)``.
    """
    was_training = model.training
    model.eval()
    n, c, s = len(labels), model.in_channels, model.input_size
    gen_state = paddle.get_rng_state()
    paddle.seed(seed)
    z = paddle.randn([n, c, s, s])
    y = paddle.to_tensor(labels, dtype="int64")
    if cfg_scale > 1.0:
        z = paddle.concat([z, z], axis=0)
        y = paddle.concat([y, paddle.full([n], model.num_classes, dtype="int64")], axis=0)
    fn = _guided(model, cfg_scale, cfg_channels)
    try:
        if model_type == "DiT":
            if sampler == "ddim":
                diffusion = create_diffusion(f"ddim{num_steps}", learn_sigma=model.learn_sigma)
                out = diffusion.ddim_sample_loop(lambda x, t, y: fn(x, t, y), z.shape, {"y": y}, noise=z)
            elif sampler == "ddpm":
                diffusion = create_diffusion(str(num_steps), learn_sigma=model.learn_sigma)
                out = diffusion.p_sample_loop(lambda x, t, y: fn(x, t, y), z.shape, {"y": y}, noise=z)
            else:
                raise ValueError(f"DiT sampler must be ddim or ddpm, got {sampler!r}")
        else:
            if transport is None:
                raise ValueError("SiT sampling needs the transport")
            smp = Sampler(transport)
            if sampler == "sde":
                run = smp.sample_sde(num_steps=num_steps, **(sde_options or {}))
            else:
                run = smp.sample_ode(sampler, num_steps=num_steps)
            out = run(z, lambda x, t, y: fn(x, t, y), y=y)
    finally:
        paddle.set_rng_state(gen_state)
        if was_training:
            model.train()
    return out[:n]


def decode_latents(vae, latents):
    """VAE-decode scaled latents -> float32 images ``(N, 3, H, W)`` in [-1, 1]."""
    scale = float(getattr(vae.config, "scaling_factor", 0.18215) or 0.18215)
    with paddle.no_grad():
        return vae.decode(latents / scale).sample.clip(-1, 1)


def save_model_folder(model, cfg, folder):
    """Write ``model_config.json`` + ``model_state.pdparams`` of ``model`` into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, MODEL_CONFIG), "w") as f:
        json.dump(cfg, f, indent=2)
    paddle.save(model.state_dict(), os.path.join(folder, MODEL_WEIGHTS))


def load_model_folder(folder):
    """``(model, cfg)`` from a folder written by :func:`save_model_folder`, or from a folder holding
    one as ``dit_ema/`` (a training checkpoint) or ``dit_model/`` (a converted official checkpoint,
    see ``tools/convert_dit_to_ppdiffusers.py``).

    Raises:
        FileNotFoundError: no model folder found at ``folder``.
        ValueError: weights that do not fit the config (missing/unexpected/mis-shaped keys listed).
    """
    for cand in (folder, os.path.join(folder, "dit_ema"), os.path.join(folder, "dit_model")):
        if os.path.isfile(os.path.join(cand, MODEL_CONFIG)) and os.path.isfile(os.path.join(cand, MODEL_WEIGHTS)):
            cfg = load_model_config(os.path.join(cand, MODEL_CONFIG))
            model = DiT(**model_kwargs(cfg))
            weights = os.path.join(cand, MODEL_WEIGHTS)
            load_state_dict_strict(model, paddle.load(weights), weights)
            model.eval()
            return model, cfg
    raise FileNotFoundError(f"{folder!r} holds no DiT model folder ({MODEL_CONFIG} + {MODEL_WEIGHTS}, or dit_ema/ or dit_model/ inside)")


def load_official_checkpoint(model_weights, model_name, image_size=256, use_ema=True):
    """``(model, cfg)`` from an official facebookresearch/DiT or willisma/SiT checkpoint.

    Args:
        model_weights: ``.pt``/``.pth`` (needs torch), ``.safetensors``, ``.npz`` or ``.pdparams``
            with the official parameter names (:mod:`models.official`); a
            ``train.py`` checkpoint ``{"model", "ema", "opt", "args"}`` gives its ``ema`` weights
            (``use_ema=False``: ``model``), like the official ``find_model``.
        model_name: ``DiT-XL/2``, ``DiT-L/4``, ``DiT-B/4``, ``DiT-S/4``, ``DiT-S/2`` or ``SiT-XL/2``.
        image_size: 256 or 512 (latent side ``image_size // 8``).

    Raises:
        ValueError: an unknown ``model_name``/``image_size``, or weights that do not fit it.
    """
    from models.official import OFFICIAL_MODEL_CONFIGS, from_official_state_dict
    from common.weights import read_state_dict

    if model_name not in OFFICIAL_MODEL_CONFIGS:
        raise ValueError(f"--model_name {model_name!r}: expected one of {sorted(OFFICIAL_MODEL_CONFIGS)}")
    if image_size not in (256, 512):
        raise ValueError(f"--image_size must be 256 or 512 (the official checkpoints), got {image_size}")
    cfg = load_model_config(os.path.join(HERE, OFFICIAL_MODEL_CONFIGS[model_name]))
    cfg = dict(cfg, input_size=image_size // 8, downscale_freq_shift=0)
    raw = read_state_dict(model_weights, "--model_weights")
    if isinstance(raw.get("ema"), dict) or isinstance(raw.get("model"), dict):
        raw = raw["ema" if use_ema and isinstance(raw.get("ema"), dict) else "model"]
    model = DiT(**model_kwargs(cfg))
    pos = model.pos_embed.pos_embed.numpy().reshape(-1, cfg["hidden_size"])
    load_state_dict_strict(model, from_official_state_dict(raw, cfg, pos), model_weights)
    model.eval()
    return model, cfg


class TrainModel(paddle.nn.Layer):
    """What the paddlenlp Trainer optimises: ``forward(latents, class_labels) -> {"loss": scalar}``
    with the objective's ``training_losses`` (DiT hybrid loss or SiT transport loss).  The
    trained network is ``self.transformer`` (a :class:`DiT`)."""

    def __init__(self, transformer, objective):
        super().__init__()
        self.transformer = transformer
        self.objective = objective

    def forward(self, latents, class_labels):
        return {"loss": self.objective.training_losses(self.transformer, latents, {"y": class_labels})["loss"]}
