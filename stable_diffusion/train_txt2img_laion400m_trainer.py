"""Train (from scratch) or fine-tune a Stable Diffusion UNet2DConditionModel on laion400m-format
caption/image parts with the paddlenlp Trainer.

Single process:   python train_txt2img_laion400m_trainer.py --output_dir out --max_steps 1000 ...
Multi-card:       python -m paddle.distributed.launch --nproc_per_node 2 train_txt2img_laion400m_trainer.py ...
See README.md for every argument; run_train_demo.sh is the offline CPU demo.
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

from paddlenlp.trainer import PdArgumentParser
from ppdiffusers.training_utils import EMAModel

from common.arg_checks import require_non_negative
from common.distributed import barrier, is_main_process, seed_everything
from common.fast_ops import apply_fast_ops, describe_fast_ops
from common.logging_utils import get_logger
from common.model_toggles import apply_model_toggles
from common.run_guard import GuardArguments, start_run
from common.trainer_callbacks import TRAINER_REQUIRED_FILES, EMACallback, ImageLoggingCallback
from common.vae import load_vae
from sd_dataset import CaptionImageFolderDataset, TextImageProcessor, build_laion_dataset, collate_fn, collect_captions
from sd_model import StableDiffusionModel
from sd_pipeline_utils import build_pipeline, load_text_encoder, load_unet, make_inference_scheduler, make_training_scheduler, resolve_component
from sd_args import HERE, SDDataArguments, SDModelArguments, SDTrainingArguments, check_args
from sd_trainer import PromptGridSampler, StableDiffusionTrainer
from sd_text_encoder import build_text_encoder_from_config, load_clip_tokenizer, train_clip_bpe_tokenizer

logger = get_logger("sd")
DEMO_TEXT_ENCODER_CONFIG = os.path.join(HERE, "config", "text_encoder_demo.json")
DEMO_UNET_CONFIG = os.path.join(HERE, "config", "unet_demo.json")


def resolve_tokenizer(model_args, data_args, output_dir):
    """Load the tokenizer named by the arguments, or train one on the training captions into
    ``<output_dir>/tokenizer`` (re-used when it already exists, e.g. on resume)."""
    if model_args.tokenizer_name:
        return load_clip_tokenizer(model_args.tokenizer_name, model_max_length=model_args.model_max_length), model_args.tokenizer_name
    if model_args.pretrained_model_name_or_path:
        tok = load_clip_tokenizer(model_args.pretrained_model_name_or_path, "tokenizer", model_args.model_max_length)
        return tok, f"{model_args.pretrained_model_name_or_path} (tokenizer)"
    te = model_args.text_encoder_name_or_path
    if te and not te.endswith(".json"):
        name, sub = resolve_component(te, None, "text_encoder")
        if sub or (not os.path.exists(te) and te.endswith("/text_encoder")):  # hub "<pipeline>/text_encoder"
            base = name if sub else te.rsplit("/", 1)[0]
            return load_clip_tokenizer(base, "tokenizer", model_args.model_max_length), f"{base} (tokenizer)"
        sibling = os.path.join(os.path.dirname(os.path.abspath(te)), "tokenizer")
        if os.path.isfile(os.path.join(sibling, "vocab.json")):
            return load_clip_tokenizer(sibling, model_max_length=model_args.model_max_length), sibling
        raise ValueError(f"--text_encoder_name_or_path {te!r} has no tokenizer next to it; pass --tokenizer_name")
    tok_dir = os.path.join(output_dir, "tokenizer")
    if is_main_process() and not os.path.isfile(os.path.join(tok_dir, "vocab.json")):
        captions = collect_captions(data_args.file_list if not data_args.train_data_dir else None, data_args.train_data_dir, data_args.caption_column)
        size = train_clip_bpe_tokenizer(captions, tok_dir, model_args.tokenizer_vocab_size, model_args.model_max_length or 77)
        logger.info("tokenizer: trained a CLIP BPE tokenizer (%d tokens) on %d training captions -> %s", size, len(captions), tok_dir)
    barrier()
    return load_clip_tokenizer(tok_dir, model_max_length=model_args.model_max_length), tok_dir


def parse_args(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) into ``(SDModelArguments, SDDataArguments,
    SDTrainingArguments, GuardArguments)`` and check them before anything is loaded
    (:func:`sd_args.check_args`: ranges, ``--resolution`` a multiple of the VAE factor,
    JSON configs readable; plus ``--prediction_type`` and a local ``--pretrained_model_name_or_path``).

    Raises:
        ValueError: an argument out of range or a malformed config file (named).
        FileNotFoundError: a local path or config file that does not exist.
    """
    parser = PdArgumentParser((SDModelArguments, SDDataArguments, SDTrainingArguments, GuardArguments))
    model_args, data_args, training_args, guard_args = parser.parse_args_into_dataclasses(argv)
    pretrained = model_args.pretrained_model_name_or_path
    if pretrained and pretrained.startswith((".", "/")) and not os.path.isdir(pretrained):
        raise FileNotFoundError(f"--pretrained_model_name_or_path {pretrained!r} does not exist")
    if model_args.prediction_type not in (None, "epsilon", "v_prediction"):
        raise ValueError(f"--prediction_type must be 'epsilon' or 'v_prediction', got {model_args.prediction_type!r}")
    check_args(model_args, data_args, training_args)
    require_non_negative(guard_args, "skip_nan_steps")
    return model_args, data_args, training_args, guard_args


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), lock ``--output_dir``, train with the paddlenlp
    Trainer and save the pipeline folder (see the module docstring)."""
    # ---- arguments
    model_args, data_args, training_args, guard_args = parse_args(argv)
    pretrained = model_args.pretrained_model_name_or_path
    # lock the output dir, validate the checkpoint to resume from, set newer ones aside
    run = start_run(training_args.output_dir, training_args.resume_from_checkpoint, legacy_required=TRAINER_REQUIRED_FILES)
    resume = run.resume

    # ---- tokenizer and data
    tokenizer, tok_desc = resolve_tokenizer(model_args, data_args, training_args.output_dir)
    logger.info("tokenizer: %s (vocab %d, max length %d)", tok_desc, len(tokenizer.get_vocab()), tokenizer.model_max_length)
    processor = TextImageProcessor(tokenizer, training_args.resolution, model_args.proportion_empty_prompts, seed=training_args.seed,
                                   center_crop=True, random_flip=data_args.random_flip, draft=data_args.jpeg_draft)
    if data_args.train_data_dir:
        train_dataset = CaptionImageFolderDataset(data_args.train_data_dir, processor, data_args.caption_column, data_args.image_column)
        logger.info("data: %d captioned images in %s", len(train_dataset), data_args.train_data_dir)
    else:
        train_dataset = build_laion_dataset(data_args.file_list, processor, seed=training_args.seed, buffer_size=data_args.buffer_size)
        logger.info("data: %d part entries (%d distinct) from %s", len(train_dataset.part_paths), len(set(train_dataset.part_paths)), data_args.file_list)
    prompts = collect_captions(data_args.file_list if not data_args.train_data_dir else None, data_args.train_data_dir,
                               data_args.caption_column, limit=data_args.num_logging_prompts)

    # ---- models: VAE (frozen), text encoder, UNet, noise schedule
    vae, _ = load_vae(model_args.vae_name_or_path or pretrained or "auto")  # a pipeline id/folder -> its vae/
    te_name, te_sub = resolve_component(model_args.text_encoder_name_or_path, pretrained, "text_encoder")
    if te_name is None or te_name.endswith(".json"):
        config = te_name or DEMO_TEXT_ENCODER_CONFIG
        text_encoder = build_text_encoder_from_config(config, tokenizer, seed=training_args.seed)
        logger.info("text encoder: randomly initialised CLIPTextModel from %s", config)
    else:
        text_encoder = load_text_encoder(te_name, te_sub)
    unet_name, unet_sub = resolve_component(model_args.unet_name_or_path, pretrained, "unet")
    unet = load_unet(unet_name or DEMO_UNET_CONFIG, unet_sub, seed=training_args.seed)
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise ValueError(f"UNet cross_attention_dim {unet.config.cross_attention_dim} != text encoder hidden_size {text_encoder.config.hidden_size}")
    noise_scheduler = make_training_scheduler(model_args.prediction_type, pretrained if pretrained and not model_args.unet_name_or_path else None)
    toggles = apply_model_toggles(unet, training_args.recompute, training_args.enable_xformers_memory_efficient_attention, name="unet")
    logger.info("toggles: %s", toggles)
    model = StableDiffusionModel(
        vae, text_encoder, unet, noise_scheduler,
        train_text_encoder=model_args.train_text_encoder,
        lr_ratio_text_encoder=training_args.text_encoder_learning_rate / training_args.unet_learning_rate,
        prediction_type=noise_scheduler.config.prediction_type, snr_gamma=model_args.snr_gamma,
        noise_offset=model_args.noise_offset, input_perturbation=model_args.input_perturbation,
    )
    logger.info(describe_fast_ops(apply_fast_ops(model, training_args.fast_ops)))  # CPU: faster paths in UNet, VAE and text encoder

    # ---- Trainer with EMA and prompt-grid callbacks
    sampler = PromptGridSampler(model, tokenizer, prompts, training_args.resolution, model_args.num_inference_steps, seed=training_args.seed)
    callbacks = [ImageLoggingCallback(sampler, training_args.image_logging_steps, upscale=max(1, 128 // training_args.resolution))]
    ema = None
    if training_args.use_ema:
        ema = EMAModel(unet.parameters(), decay=training_args.ema_decay)
        callbacks.append(EMACallback(ema, unet.parameters(), resume_from_checkpoint=resume,
                                     export_fn=lambda folder: unet.save_pretrained(os.path.join(folder, "unet_ema"))))
    trainer = StableDiffusionTrainer(model=model, args=training_args, train_dataset=train_dataset, data_collator=collate_fn, callbacks=callbacks,
                                     skip_nan_steps=guard_args.skip_nan_steps)
    seed_everything(training_args.seed)  # per-rank noise/timesteps: seed * world_size + rank
    if training_args.do_train or training_args.max_steps > 0:
        trainer.train(resume_from_checkpoint=resume)
    if hasattr(train_dataset, "num_skipped") and train_dataset.num_skipped:
        logger.warning("data: skipped %d corrupt record(s) in this process", train_dataset.num_skipped)

    # ---- save: a full pipeline folder at output_dir (UNet = EMA weights when --use_ema; raw UNet in unet_raw/)
    if is_main_process():
        out = training_args.output_dir
        if ema is not None:
            unet.save_pretrained(os.path.join(out, "unet_raw"))
            ema.store(unet.parameters())
            ema.copy_to(unet.parameters())
        pipe = build_pipeline(vae, text_encoder, tokenizer, unet, make_inference_scheduler(noise_scheduler, "ddim"))
        pipe.save_pretrained(out)
        if ema is not None:
            ema.restore(unet.parameters())
        logger.info("saved the pipeline (%s UNet) to %s", "EMA" if ema is not None else "trained", out)
    barrier()
    run.close()


if __name__ == "__main__":
    main()
