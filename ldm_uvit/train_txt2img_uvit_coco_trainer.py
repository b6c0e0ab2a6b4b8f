"""Train a text-to-image latent diffusion model with a U-ViT backbone on COCO-256-style features.

Reads the precomputed feature layout (uvit_features.py / extract_features.py), samples a latent from
each image's autoencoder moments, and trains ppdiffusers' ``UViTT2IModel`` with the
denoising loss (uvit_diffusion.py: noise prediction as in U-ViT, or v-prediction with
``--prediction_type``) under the paddlenlp ``Trainer`` (AdamW, warmup, checkpoints, resume, data
parallel) with an EMA of the weights.

    python ldm_uvit/train_txt2img_uvit_coco_trainer.py --do_train --output_dir outputs/uvit_demo \\
        --feature_path data/coco256_features_demo --unet_config_file config/uvit_t2i_demo.json \\
        --model_max_length 8 --per_device_train_batch_size 64 --max_steps 400

Multi-process: ``python -m paddle.distributed.launch --nproc_per_node 2 ldm_uvit/train_txt2img_uvit_coco_trainer.py ...``
(add ``--ips IP1,IP2`` for several nodes).  See README.md.
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

from dataclasses import asdict, dataclass, field

import paddle
from paddlenlp.trainer import PdArgumentParser, TrainingArguments, set_seed
from ppdiffusers.training_utils import EMAModel

from common.arg_checks import check_trainer_arguments, require_non_negative, require_positive, require_range
from common.distributed import seed_everything
from common.fast_ops import FAST_OPS_HELP, apply_fast_ops, describe_fast_ops
from common.logging_utils import get_logger
from common.model_toggles import apply_model_toggles
from common.run_guard import GuardArguments, start_run
from common.trainer_callbacks import EMA_STATE_FILE, TRAINER_REQUIRED_FILES, EMACallback, ImageLoggingCallback, SetEpochCallback
from common.vae import load_vae
from uvit_diffusion import NoisePredictionDiffusion, UViTLatentDiffusion, check_prediction_type, make_ddpm_scheduler
from uvit_features import CocoFeatureDataset, load_vis_prompts, read_meta, resolve_vae_name
from uvit_trainer import RunInfoCallback, UViTTrainer, VisPromptSampler, build_unet, load_unet_config

logger = get_logger("ldm_uvit")


@dataclass
class ModelArguments:
    unet_config_file: str = field(default="config/uvit_t2i_small_deep.json", metadata={"help": "U-ViT size (JSON; relative paths also tried under ldm_uvit/)"})
    vae_name_or_path: str = field(default="auto", metadata={"help": "autoencoder for the latent scale factor and image logs: auto | random | folder | hub id"})
    model_max_length: int = field(default=77, metadata={"help": "text tokens per caption; must equal the config's num_text_tokens and the features"})
    num_inference_steps: int = field(default=50, metadata={"help": "DDIM steps of the training image logs"})
    guidance_scale: float = field(default=2.0, metadata={"help": "classifier-free guidance scale of the image logs (U-ViT's scale 1 = 2 here)"})
    image_logging_steps: int = field(default=1000, metadata={"help": "sample the run_vis prompts every N steps (0: never)"})
    use_ema: bool = field(default=True, metadata={"help": "keep an EMA of the U-ViT weights (saved, restored on resume, used for image logs)"})
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay (ppdiffusers EMAModel warms it up as (1+n)/(10+n))"})
    enable_xformers_memory_efficient_attention: bool = field(default=False, metadata={"help": "memory-efficient attention (GPU kernels; a logged no-op on CPU)"})
    prediction_type: str = field(default="epsilon", metadata={"help": "training target: epsilon (U-ViT) or v_prediction; the export's scheduler gets the same"})
    fast_ops: bool = field(default=True, metadata={"help": FAST_OPS_HELP})


@dataclass
class DataArguments:
    feature_path: str = field(default="data/coco256_features", metadata={"help": "features root: train/, empty_context.npy, run_vis/ (README.md)"})
    p_uncond: float = field(default=0.1, metadata={"help": "probability of replacing the caption by the empty caption (CFG dropout)"})


def parse_args(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) into ``(ModelArguments, DataArguments,
    TrainingArguments, GuardArguments)``; with ``--do_train`` also check them before anything is
    loaded (:func:`check_args`).

    Raises:
        ValueError: an argument out of range, or a malformed ``--unet_config_file`` (named).
        FileNotFoundError: ``--unet_config_file`` does not exist.
    """
    parser = PdArgumentParser((ModelArguments, DataArguments, TrainingArguments, GuardArguments))
    model_args, data_args, training_args, guard_args = parser.parse_args_into_dataclasses(argv)
    if training_args.do_train:
        check_args(model_args, data_args, training_args, guard_args)
    return model_args, data_args, training_args, guard_args


def check_args(model_args, data_args, training_args, guard_args):
    """Range-check the arguments and read ``--unet_config_file``; returns the U-ViT config.

    paddlenlp arguments as in :func:`common.arg_checks.check_trainer_arguments` (``--max_steps``
    > 0, or -1 with ``--num_train_epochs`` > 0; lr, batch, logging/save steps > 0 ...);
    ``--model_max_length``, ``--num_inference_steps`` > 0, ``--image_logging_steps`` >= 0,
    ``--ema_decay``, ``--p_uncond`` in [0, 1]; ``--prediction_type`` epsilon or v_prediction;
    no fp16/bf16 on CPU; ``--model_max_length`` equal to the config's ``num_text_tokens``.

    Raises:
        ValueError: the first problem, naming the flag (or file) and the value.
        FileNotFoundError: ``--unet_config_file`` does not exist.
    """
    check_trainer_arguments(training_args)
    require_positive(model_args, "model_max_length", "num_inference_steps")
    require_non_negative(model_args, "image_logging_steps")
    require_range(model_args, "ema_decay", 0, 1)
    require_range(data_args, "p_uncond", 0, 1)
    require_non_negative(guard_args, "skip_nan_steps")
    check_prediction_type(model_args.prediction_type)
    if (training_args.fp16 or training_args.bf16) and paddle.device.get_device() == "cpu":
        raise ValueError("--fp16/--bf16 mixed precision needs a GPU; on CPU train with --fp16 False")
    config = load_unet_config(model_args.unet_config_file)
    if config["num_text_tokens"] != model_args.model_max_length:
        raise ValueError(
            f"--model_max_length {model_args.model_max_length} != num_text_tokens {config['num_text_tokens']} of {model_args.unet_config_file}"
        )
    return config


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), lock ``--output_dir``, train with the paddlenlp
    Trainer and save the run (see the module docstring); without ``--do_train`` nothing is done."""
    # ---- arguments
    model_args, data_args, training_args, guard_args = parse_args(argv)
    if not training_args.do_train:
        logger.info("--do_train not given: nothing to do")
        return
    config = load_unet_config(model_args.unet_config_file)
    # lock the output dir, validate the checkpoint to resume from, set newer ones aside
    run = start_run(training_args.output_dir, training_args.resume_from_checkpoint, legacy_required=TRAINER_REQUIRED_FILES)
    resume = run.resume

    # ---- data
    size, channels = config["sample_size"], config["in_channels"]
    train_dataset = CocoFeatureDataset(
        data_args.feature_path,
        "train",
        p_uncond=data_args.p_uncond,
        seed=training_args.seed,
        moments_shape=(2 * channels, size, size),
        context_shape=(model_args.model_max_length, config["clip_dim"]),
    )
    logger.info("features: %d images, %d captions from %s", len(train_dataset), sum(train_dataset.n_captions), data_args.feature_path)

    # ---- models
    model_args.vae_name_or_path = resolve_vae_name(model_args.vae_name_or_path, data_args.feature_path)  # "auto": the features' VAE
    vae, vae_description = load_vae(model_args.vae_name_or_path)
    made_with = read_meta(data_args.feature_path).get("vae")
    if made_with and made_with != vae_description:
        logger.warning("features were made with VAE %r but this run uses %r (scale factor, image logs, export)", made_with, vae_description)
    scale_factor = float(vae.config.scaling_factor)
    logger.info("latent scale factor %.5f (the VAE config's scaling_factor; U-ViT uses 0.23010 with the SD VAE on COCO)", scale_factor)
    set_seed(training_args.seed)  # same initial weights on every rank
    unet = build_unet(config)
    logger.info("U-ViT: %.2fM parameters from %s", sum(int(p.numel()) for p in unet.parameters()) / 1e6, model_args.unet_config_file)
    apply_model_toggles(
        unet, recompute=training_args.recompute, memory_efficient_attention=model_args.enable_xformers_memory_efficient_attention, name="unet"
    )
    model = UViTLatentDiffusion(unet, scale_factor, NoisePredictionDiffusion(make_ddpm_scheduler(model_args.prediction_type)))
    logger.info(describe_fast_ops(apply_fast_ops(model, model_args.fast_ops)))  # CPU: faster paths, same parameters and numbers
    apply_fast_ops(vae, model_args.fast_ops)  # it decodes the image logs
    logger.info("objective: %s prediction (U-ViT trains epsilon)", model_args.prediction_type)
    ema = EMAModel(unet.parameters(), decay=model_args.ema_decay) if model_args.use_ema else None

    # ---- trainer
    run_info = RunInfoCallback(model_args.unet_config_file, {**asdict(model_args), **asdict(data_args), "feature_path": os.path.abspath(data_args.feature_path)})
    callbacks = [SetEpochCallback(train_dataset), run_info]
    if ema is not None:
        callbacks.append(EMACallback(ema, unet.parameters(), resume_from_checkpoint=resume))
    prompts, contexts = load_vis_prompts(data_args.feature_path, max_prompts=10)
    if model_args.image_logging_steps > 0:
        if contexts is None:
            logger.warning("no %s/run_vis prompts: image logging is off", data_args.feature_path)
        else:
            sampler = VisPromptSampler(
                unet, vae, scale_factor, contexts, train_dataset.empty_context, model_args.num_inference_steps, model_args.guidance_scale,
                prediction_type=model_args.prediction_type, ema=ema, seed=training_args.seed,
            )
            logger.info("sample grids every %d steps (%s weights): %s", model_args.image_logging_steps, "EMA" if ema else "raw", " | ".join(prompts))
            callbacks.append(ImageLoggingCallback(sampler, model_args.image_logging_steps, nrow=min(len(prompts), 5)))
    trainer = UViTTrainer(model=model, args=training_args, train_dataset=train_dataset, callbacks=callbacks, skip_nan_steps=guard_args.skip_nan_steps)
    seed_everything(training_args.seed)  # different noise / timesteps on each rank (the Trainer seeds all ranks alike)
    if resume:
        logger.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)

    # ---- save: model_state.pdparams (unet.* keys), ema_state.pdparams, the U-ViT config and run arguments
    trainer.save_model()
    trainer.save_state()
    if trainer.is_world_process_zero():
        run_info.write(training_args.output_dir)
        if ema is not None:
            paddle.save(ema.state_dict(), os.path.join(training_args.output_dir, EMA_STATE_FILE))
        logger.info("saved %s: model_state.pdparams, %s, unet_config.json, ldm_uvit_args.json", training_args.output_dir, EMA_STATE_FILE if ema else "no EMA")
    run.close()


if __name__ == "__main__":
    main()
