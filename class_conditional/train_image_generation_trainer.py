"""Train DiT (Gaussian diffusion, learned sigma) or SiT (transport) on pre-extracted VAE features
with the paddlenlp Trainer.  The config's ``model_type`` picks the objective.

    python train_image_generation_trainer.py --do_train --feature_path data/fastdit_imagenet256 \
        --config_file config/DiT_XL_patch2.json --output_dir outputs/DiT_XL_patch2_trainer \
        --per_device_train_batch_size 32 --learning_rate 1e-4 --max_steps 7000000
    python -m paddle.distributed.launch --nproc_per_node 8 train_image_generation_trainer.py ...

The twin of ``train_image_generation_notrainer.py`` (DiT's ``train.py`` as a plain loop): same
data, model, objective, EMA (on by default), sample grids and final folders (``preview.py``);
only the loop, the checkpoint format and the flag names differ.  Data -> model -> loss ->
checkpoint: ``FeatureDataset`` (features.py) -> ``build_transformer`` + ``build_objective``
(objective.py) -> ``TrainModel.forward`` = ``objective.training_losses`` -> ``SafeTrainer``
checkpoints ``<output_dir>/checkpoint-<step>/`` (model, optimizer, scheduler, RNG,
``ema_state.pdparams`` and the EMA model folder ``dit_ema/``).  Every ``--image_logging_steps``
a grid ``<output_dir>/samples/step-<step>.png``; at the end ``<output_dir>/final/`` (EMA weights)
and ``<output_dir>/final_raw/`` (trained weights).
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

from dataclasses import dataclass, field

from paddlenlp.trainer import PdArgumentParser, TrainingArguments
from ppdiffusers.training_utils import EMAModel

from features import FeatureDataset
from models import count_parameters
from objective import ObjectiveArguments, TrainModel, build_objective, build_transformer, check_objective_arguments, save_model_folder
from preview import PREVIEW_UPSCALE, PreviewSampler, save_final_model
from common.arg_checks import check_trainer_arguments, require_non_negative, require_positive, require_range
from common.distributed import is_main_process, seed_everything, seed_model_init
from common.fast_ops import apply_fast_ops, describe_fast_ops
from common.logging_utils import get_logger
from common.model_toggles import apply_model_toggles
from common.run_guard import GuardArguments, start_run
from common.safe_trainer import SafeTrainer
from common.trainer_callbacks import TRAINER_REQUIRED_FILES, EMACallback, ImageLoggingCallback, SetEpochCallback
from common.vae import resolve_vae_name

logger = get_logger("class_conditional")


@dataclass
class DiTTrainingArguments(TrainingArguments):
    use_ema: bool = field(default=True, metadata={"help": "keep an EMA of the weights (saved in every checkpoint; final/ holds it), as DiT does"})
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay (ppdiffusers EMAModel warm-up schedule capped at this)"})
    image_logging_steps: int = field(default=-1, metadata={"help": "write a class grid every N steps and at the end (<= 0: never)"})
    enable_xformers_memory_efficient_attention: bool = field(default=False, metadata={"help": "memory-efficient attention (GPU only)"})


def parse_args(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) into ``(ObjectiveArguments, DiTTrainingArguments,
    GuardArguments)`` and check them before anything is loaded: the paddlenlp Trainer arguments
    (:func:`common.arg_checks.check_trainer_arguments`: ``--max_steps`` > 0 or -1 with
    ``--do_train`` and ``--num_train_epochs`` > 0, lr, batch, logging/save steps > 0 ...),
    ``--ema_decay`` in [0, 1], ``--num_inference_steps`` > 0, ``--config_file`` is read and the
    objective flags fit its ``model_type`` (:func:`objective.check_objective_arguments`), and with
    ``--image_logging_steps`` > 0 the ``--vae_name_or_path`` that decodes the grids resolves.

    Raises:
        ValueError: the first argument out of range, e.g. ``--max_steps must be > 0 (...), got -5``,
            or a SiT-only flag (``--path_type`` ...) changed with a DiT config.
        FileNotFoundError: ``--config_file`` does not exist, or ``--vae_name_or_path auto`` without
            the trained demo VAE while grids are asked for.
    """
    parser = PdArgumentParser((ObjectiveArguments, DiTTrainingArguments, GuardArguments))
    obj_args, training_args, guard_args = parser.parse_args_into_dataclasses(argv)
    check_trainer_arguments(training_args)
    require_range(training_args, "ema_decay", 0, 1)
    require_positive(obj_args, "num_inference_steps")
    require_non_negative(guard_args, "skip_nan_steps")
    check_objective_arguments(obj_args)
    if training_args.image_logging_steps > 0:
        resolve_vae_name(obj_args.vae_name_or_path)
    return obj_args, training_args, guard_args


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), lock ``--output_dir``, train with the paddlenlp
    Trainer and save ``final/`` (see the module docstring)."""
    # ---- arguments
    obj_args, training_args, guard_args = parse_args(argv)
    cfg = check_objective_arguments(obj_args)
    # lock the output dir, validate the checkpoint to resume from, set newer ones aside
    run = start_run(training_args.output_dir, training_args.resume_from_checkpoint, legacy_required=TRAINER_REQUIRED_FILES)
    resume = run.resume

    # ---- data: pre-extracted latents (+ flips) and labels
    dataset = FeatureDataset(obj_args.feature_path, seed=training_args.seed, random_flip=obj_args.random_flip)
    logger.info("data: %d features in %s", len(dataset), obj_args.feature_path)

    # ---- model and objective
    seed_model_init(training_args.seed)  # same initial weights on every rank (DiT's idiom)
    transformer = build_transformer(cfg, obj_args)  # fresh, or --pretrained_model_name_or_path
    objective = build_objective(cfg, obj_args)
    logger.info("model: %s %s, %.2fM parameters; objective: %s", cfg["model_type"], obj_args.config_file, count_parameters(transformer) / 1e6, type(objective).__name__)
    logger.info("toggles: %s", apply_model_toggles(transformer, training_args.recompute, training_args.enable_xformers_memory_efficient_attention, name="dit"))
    logger.info(describe_fast_ops(apply_fast_ops(transformer, obj_args.fast_ops)))  # CPU: faster paths, same parameters and numbers
    model = TrainModel(transformer, objective)

    # ---- Trainer with epoch, EMA and sample-grid callbacks (EMA first: the grid of a step shows that step's EMA)
    callbacks = [SetEpochCallback(dataset)]
    ema = None
    if training_args.use_ema:
        ema = EMAModel(transformer.parameters(), decay=training_args.ema_decay)
        callbacks.append(EMACallback(ema, transformer.parameters(), resume_from_checkpoint=resume,
                                     export_fn=lambda folder: save_model_folder(transformer, cfg, os.path.join(folder, "dit_ema"))))
    num_classes = len(dataset.class_names) if dataset.class_names else cfg["num_classes"]
    preview = PreviewSampler(transformer, cfg, obj_args, objective, num_classes, training_args.seed, training_args.image_logging_steps, ema)
    callbacks.append(ImageLoggingCallback(preview, training_args.image_logging_steps, nrow=len(preview.labels), upscale=PREVIEW_UPSCALE))
    # atomic checkpoints, --save_total_limit, NaN/SIGTERM guard, exact resume (common/safe_trainer.py)
    trainer = SafeTrainer(model=model, args=training_args, train_dataset=dataset, callbacks=callbacks, skip_nan_steps=guard_args.skip_nan_steps)
    seed_everything(training_args.seed)  # after paddlenlp's set_seed: each rank its own noise stream, seed * world + rank
    if training_args.do_train or training_args.max_steps > 0:
        trainer.train(resume_from_checkpoint=resume)

    # ---- save: final/ (EMA weights) + final_raw/ (trained weights), the last grid
    if is_main_process():
        save_final_model(transformer, cfg, training_args.output_dir, ema)
        preview.save_last(training_args.output_dir, trainer.state.global_step)
    run.close()


if __name__ == "__main__":
    main()
