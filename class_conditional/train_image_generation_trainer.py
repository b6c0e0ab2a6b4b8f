"""Train DiT (Gaussian diffusion, learned sigma) or SiT (transport) on pre-extracted VAE features
with the paddlenlp Trainer.  The config's ``model_type`` picks the objective.

    python train_image_generation_trainer.py --do_train --feature_path data/fastdit_imagenet256 \
        --config_file config/DiT_XL_patch2.json --output_dir output_trainer/DiT_XL_patch2_trainer \
        --per_device_train_batch_size 32 --learning_rate 1e-4 --max_steps 7000000 --use_ema True
    python -m paddle.distributed.launch --nproc_per_node 8 train_image_generation_trainer.py ...

Writes Trainer checkpoints ``<output_dir>/checkpoint-<step>/`` (model, optimizer, scheduler, RNG,
``ema_state.pdparams`` and the EMA model folder ``dit_ema/``), sample grids under
``<output_dir>/samples/`` every ``--image_logging_steps``, and at the end ``<output_dir>/final/``
(EMA weights when ``--use_ema``; raw weights in ``<output_dir>/final_raw/``).
"""
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))  # repo root, for common/
from common.cpu_env import apply_cpu_env  # noqa: E402

apply_cpu_env()  # must run before paddle is imported

import paddle  # noqa: E402
from paddlenlp.trainer import PdArgumentParser, TrainerCallback, TrainingArguments  # noqa: E402
from ppdiffusers.training_utils import EMAModel  # noqa: E402

from class_conditional.features import FeatureDataset  # noqa: E402
from class_conditional.models import count_parameters, load_model_config  # noqa: E402
from class_conditional.objective import ObjectiveArguments, build_transformer, TrainModel, build_objective, decode_latents, resolve_config_file, sample_latents, save_model_folder  # noqa: E402
from common.arg_checks import check_trainer_arguments, require_non_negative, require_positive, require_range  # noqa: E402
from common.distributed import get_world_size, is_main_process  # noqa: E402
from common.images import save_grid  # noqa: E402
from common.logging_utils import get_logger  # noqa: E402
from common.model_toggles import apply_model_toggles  # noqa: E402
from common.run_guard import GuardArguments, start_run  # noqa: E402
from common.safe_trainer import SafeTrainer  # noqa: E402
from common.trainer_callbacks import TRAINER_REQUIRED_FILES, EMACallback  # noqa: E402

logger = get_logger("class_conditional")


@dataclass
class DiTTrainingArguments(TrainingArguments):
    use_ema: bool = field(default=False, metadata={"help": "keep an EMA of the weights (saved in every checkpoint)"})
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay (ppdiffusers EMAModel warm-up schedule capped at this)"})
    image_logging_steps: int = field(default=-1, metadata={"help": "sample a class grid every N steps (<= 0: never)"})
    enable_xformers_memory_efficient_attention: bool = field(default=False, metadata={"help": "memory-efficient attention (GPU only)"})
    dp_degree: int = field(default=-1, metadata={"help": "data-parallel degree; -1 = world / (tensor*pipeline*sharding*sep) degrees; checked against the launch"})


class EpochCallback(TrainerCallback):
    """Tell the feature dataset the epoch, so the stored-flip choice changes per epoch."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


class SampleGridCallback(TrainerCallback):
    """Every ``image_logging_steps``: sample one image per class (up to 10 classes) and save
    ``<output_dir>/samples/step_<n>.png`` (rank 0)."""

    def __init__(self, transformer, cfg, obj_args, objective, num_labels):
        self.transformer, self.cfg, self.obj_args, self.objective = transformer, cfg, obj_args, objective
        self.labels = list(range(min(10, num_labels)))
        self.vae = None

    def on_step_end(self, args, state, control, **kwargs):
        n = args.image_logging_steps
        if n <= 0 or state.global_step % n or not state.is_world_process_zero:
            return
        if self.vae is None:
            from common.vae import load_vae

            self.vae, _ = load_vae(self.obj_args.vae_name_or_path)
        a = self.obj_args
        z = sample_latents(self.transformer, self.cfg["model_type"], self.labels, a.num_inference_steps, a.cfg_scale,
                           seed=args.seed, transport=self.objective if self.cfg["model_type"] == "SiT" else None,
                           sampler="ddim" if self.cfg["model_type"] == "DiT" else a.sampling_method)
        path = save_grid(list(decode_latents(self.vae, z)), os.path.join(args.output_dir, "samples", f"step_{state.global_step}.png"), nrow=len(self.labels), upscale=2)
        logger.info("sample grid -> %s", path)


def parse_args(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) into ``(ObjectiveArguments, DiTTrainingArguments,
    GuardArguments)`` and range-check them before anything is loaded: the paddlenlp Trainer
    arguments (:func:`common.arg_checks.check_trainer_arguments`: ``--max_steps`` > 0 or -1 with
    ``--do_train`` and ``--num_train_epochs`` > 0, lr, batch, logging/save steps > 0 ...),
    ``--ema_decay`` in [0, 1], ``--num_inference_steps`` > 0, and ``--config_file`` is read
    (a missing or malformed file is named).

    Raises:
        ValueError: the first argument out of range, e.g. ``--max_steps must be > 0 (...), got -5``.
        FileNotFoundError: ``--config_file`` does not exist.
    """
    parser = PdArgumentParser((ObjectiveArguments, DiTTrainingArguments, GuardArguments))
    obj_args, training_args, guard_args = parser.parse_args_into_dataclasses(argv)
    check_trainer_arguments(training_args)
    require_range(training_args, "ema_decay", 0, 1)
    require_positive(obj_args, "num_inference_steps")
    require_non_negative(guard_args, "skip_nan_steps")
    load_model_config(resolve_config_file(obj_args.config_file))
    return obj_args, training_args, guard_args


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), lock ``--output_dir``, train with the paddlenlp
    Trainer and save ``final/`` (see the module docstring)."""
    # ---- arguments
    obj_args, training_args, guard_args = parse_args(argv)
    derived_dp = get_world_size() // max(1, training_args.tensor_parallel_degree * training_args.pipeline_parallel_degree
                                         * max(1, training_args.sharding_parallel_degree) * training_args.sep_parallel_degree)
    if training_args.dp_degree not in (-1, derived_dp):
        raise ValueError(f"--dp_degree {training_args.dp_degree} does not match the launch: {get_world_size()} processes / "
                         f"(tensor*pipeline*sharding*sep degrees) = {derived_dp}")
    cfg = load_model_config(resolve_config_file(obj_args.config_file))
    # lock the output dir, validate the checkpoint to resume from, set newer ones aside
    run = start_run(training_args.output_dir, training_args.resume_from_checkpoint, legacy_required=TRAINER_REQUIRED_FILES)
    resume = run.resume

    # ---- data: pre-extracted latents (+ flips) and labels
    dataset = FeatureDataset(obj_args.feature_path, seed=training_args.seed, random_flip=obj_args.random_flip)
    logger.info("data: %d features in %s", len(dataset), obj_args.feature_path)

    # ---- model and objective
    paddle.seed(training_args.seed)  # same initial weights on every rank
    transformer = build_transformer(cfg, obj_args)  # fresh, or --pretrained_model_name_or_path
    objective = build_objective(cfg, obj_args)
    logger.info("model: %s %s, %.2fM parameters; objective: %s", cfg["model_type"], obj_args.config_file, count_parameters(transformer) / 1e6, type(objective).__name__)
    logger.info("toggles: %s", apply_model_toggles(transformer, training_args.recompute, training_args.enable_xformers_memory_efficient_attention, name="dit"))
    model = TrainModel(transformer, objective)

    # ---- Trainer with EMA, epoch and sample-grid callbacks
    callbacks = [EpochCallback(dataset), SampleGridCallback(transformer, cfg, obj_args, objective, len(dataset.class_names or range(10)))]
    ema = None
    if training_args.use_ema:
        ema = EMAModel(transformer.parameters(), decay=training_args.ema_decay)
        callbacks.append(EMACallback(ema, transformer.parameters(), resume_from_checkpoint=resume,
                                     export_fn=lambda folder: save_model_folder(transformer, cfg, os.path.join(folder, "dit_ema"))))
    # atomic checkpoints, --save_total_limit, NaN/SIGTERM guard, exact resume (common/safe_trainer.py)
    trainer = SafeTrainer(model=model, args=training_args, train_dataset=dataset, callbacks=callbacks, skip_nan_steps=guard_args.skip_nan_steps)
    if training_args.do_train or training_args.max_steps > 0:
        trainer.train(resume_from_checkpoint=resume)

    # ---- save: final/ (EMA weights when --use_ema) + final_raw/
    if is_main_process():
        out = training_args.output_dir
        save_model_folder(transformer, cfg, os.path.join(out, "final_raw" if ema is not None else "final"))
        if ema is not None:
            ema.store(transformer.parameters())
            ema.copy_to(transformer.parameters())
            save_model_folder(transformer, cfg, os.path.join(out, "final"))
            ema.restore(transformer.parameters())
        logger.info("saved %s weights to %s", "EMA" if ema is not None else "trained", os.path.join(out, "final"))
    run.close()


if __name__ == "__main__":
    main()
