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
from paddlenlp.trainer import PdArgumentParser, Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from ppdiffusers.training_utils import EMAModel  # noqa: E402

from class_conditional.features import FeatureDataset  # noqa: E402
from class_conditional.models import DiT, count_parameters, load_model_config  # noqa: E402
from class_conditional.models.dit import model_kwargs  # noqa: E402
from class_conditional.objective import ObjectiveArguments, TrainModel, build_objective, decode_latents, resolve_config_file, sample_latents, save_model_folder  # noqa: E402
from common.distributed import get_world_size, is_main_process  # noqa: E402
from common.images import save_grid  # noqa: E402
from common.logging_utils import get_logger  # noqa: E402
from common.model_toggles import apply_model_toggles  # noqa: E402
from common.trainer_callbacks import EMACallback, ResumeRNGCallback, resolve_trainer_checkpoint  # noqa: E402

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


def main():
    # ---- arguments
    parser = PdArgumentParser((ObjectiveArguments, DiTTrainingArguments))
    obj_args, training_args = parser.parse_args_into_dataclasses()
    derived_dp = get_world_size() // max(1, training_args.tensor_parallel_degree * training_args.pipeline_parallel_degree
                                         * max(1, training_args.sharding_parallel_degree) * training_args.sep_parallel_degree)
    if training_args.dp_degree not in (-1, derived_dp):
        raise ValueError(f"--dp_degree {training_args.dp_degree} does not match the launch: {get_world_size()} processes / "
                         f"(tensor*pipeline*sharding*sep degrees) = {derived_dp}")
    cfg = load_model_config(resolve_config_file(obj_args.config_file))
    resume = resolve_trainer_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)

    # ---- data: pre-extracted latents (+ flips) and labels
    dataset = FeatureDataset(obj_args.feature_path, seed=training_args.seed, random_flip=obj_args.random_flip)
    logger.info("data: %d features in %s", len(dataset), obj_args.feature_path)

    # ---- model and objective
    paddle.seed(training_args.seed)  # same initial weights on every rank
    transformer = DiT(**model_kwargs(cfg))
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
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset, callbacks=callbacks)
    trainer.add_callback(ResumeRNGCallback(trainer, resume))  # exact continuation also at epoch boundaries
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


if __name__ == "__main__":
    main()
