"""Train DiT or SiT on pre-extracted VAE features with a plain training loop (facebookresearch/DiT
``train.py`` / fast-DiT style).

    python train_image_generation_notrainer.py --config_file config/DiT_XL_patch2.json \
        --feature_path data/fastdit_imagenet256 --results_dir outputs/DiT_XL_patch2_notrainer \
        --global_batch_size 256 --log_every 50 --ckpt_every 5000
    python -m paddle.distributed.launch --nproc_per_node 8 train_image_generation_notrainer.py ...

The twin of ``train_image_generation_trainer.py``: same data, model, objective, EMA (on by
default), sample grids and final folders (``preview.py``), DiT's flag names.  Data -> model ->
loss -> checkpoint: ``FeatureDataset`` (features.py) sharded by ``ResumableBatchSampler`` ->
``build_transformer`` + ``build_objective`` (objective.py) -> ``objective.training_losses`` ->
every ``--ckpt_every`` steps rank 0 writes ``<results_dir>/checkpoint-<step>/`` (model, EMA,
optimizer, step, data position, every rank's RNG, args + the EMA model folder ``dit_ema/``);
``--resume_from_checkpoint latest`` continues from the newest one, exactly.  The logged loss is
the mean over the ranks and the ``--log_every`` window, as DiT logs it.  Every
``--image_logging_steps`` a grid ``<results_dir>/samples/step-<step>.png``; at the end
``<results_dir>/final/`` (EMA weights) and ``<results_dir>/final_raw/`` (trained weights).
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

from dataclasses import asdict, dataclass, field
from typing import Optional

import paddle
from paddlenlp.trainer import PdArgumentParser
from PIL import Image
from ppdiffusers.training_utils import EMAModel

from features import FeatureDataset
from models import count_parameters
from objective import ObjectiveArguments, build_objective, build_transformer, check_objective_arguments, save_model_folder
from preview import PreviewSampler, ema_weights, save_final_model
from common.arg_checks import require_non_negative, require_positive, require_range
from common.checkpoint import gather_rng_states, load_checkpoint, load_optimizer_state, optimizer_state, restore_rank_rng_state, save_checkpoint
from common.distributed import barrier, init_distributed, is_main_process, seed_everything, seed_model_init, shutdown_distributed, wrap_data_parallel
from common.fast_ops import apply_fast_ops, describe_fast_ops
from common.images import ResumableBatchSampler
from common.logging_utils import TrainLogger, get_logger
from common.model_toggles import apply_model_toggles
from common.run_guard import GuardArguments, TrainingGuard, start_run
from common.vae import resolve_vae_name
from common.weights import load_state_dict_strict

logger = get_logger("class_conditional")


@dataclass
class LoopArguments:
    results_dir: str = field(default="./output_notrainer/DiT_XL_patch2_notrainer", metadata={"help": "run folder (checkpoints, logs, samples)"})
    global_batch_size: int = field(default=256, metadata={"help": "batch size summed over all processes"})
    num_workers: int = field(default=4, metadata={"help": "DataLoader workers per process"})
    max_steps: int = field(default=7000000, metadata={"help": "stop after this many optimisation steps"})
    epochs: int = field(default=1400, metadata={"help": "upper bound on epochs (whichever of max_steps/epochs ends first)"})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (constant)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=-1.0, metadata={"help": "clip gradients to this global norm (<= 0: off)"})
    use_ema: bool = field(default=True, metadata={"help": "keep an EMA of the weights (in every checkpoint; final/ holds it), as DiT does"})
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay (ppdiffusers EMAModel warm-up schedule capped at this)"})
    global_seed: int = field(default=0, metadata={"help": "seed; same initial weights on every rank, then process seed = global_seed * world + rank"})
    log_every: int = field(default=100, metadata={"help": "log every N steps (loss: mean over ranks and the N steps)"})
    ckpt_every: int = field(default=50000, metadata={"help": "checkpoint every N steps (and at the end)"})
    save_total_limit: Optional[int] = field(default=None, metadata={"help": "keep only this many newest checkpoints"})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={"help": "'latest' or a checkpoint folder"})
    image_logging_steps: int = field(default=-1, metadata={"help": "write a class grid every N steps and at the end (<= 0: never)"})
    recompute: bool = field(default=False, metadata={"help": "recompute block activations in backward"})
    enable_xformers_memory_efficient_attention: bool = field(default=False, metadata={"help": "memory-efficient attention (GPU only)"})


def parse_args(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) into ``(ObjectiveArguments, LoopArguments,
    GuardArguments)`` and range-check them (see :func:`check_args`)."""
    obj_args, args, guard_args = PdArgumentParser((ObjectiveArguments, LoopArguments, GuardArguments)).parse_args_into_dataclasses(argv)
    check_args(obj_args, args, guard_args)
    return obj_args, args, guard_args


def check_args(obj_args, args, guard_args):
    """Check the arguments before anything is loaded: steps, epochs, intervals, batch and learning
    rate > 0, ``--ema_decay`` in [0, 1], ...; ``--config_file`` is read (a missing or malformed
    file is named) and the objective flags fit its ``model_type``
    (:func:`objective.check_objective_arguments`); with ``--image_logging_steps`` > 0 the
    ``--vae_name_or_path`` that decodes the grids resolves.

    Raises:
        ValueError: the first argument out of range, e.g. ``--ckpt_every must be > 0, got 0``, or a
            SiT-only flag (``--path_type`` ...) changed with a DiT config.
        FileNotFoundError: ``--config_file`` does not exist, or ``--vae_name_or_path auto`` without
            the trained demo VAE while grids are asked for.
    """
    require_positive(args, "global_batch_size", "max_steps", "epochs", "learning_rate", "log_every", "ckpt_every")
    require_non_negative(args, "num_workers", "weight_decay", "save_total_limit")
    require_range(args, "ema_decay", 0, 1)
    require_positive(obj_args, "num_inference_steps")
    require_non_negative(guard_args, "skip_nan_steps")
    check_objective_arguments(obj_args)
    if args.image_logging_steps > 0:
        resolve_vae_name(obj_args.vae_name_or_path)


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), lock ``--results_dir`` and train.

    Raises:
        ValueError: an argument out of range (before anything is loaded or written).
        common.run_guard.OutputDirInUseError: another run uses ``--results_dir``.
        common.run_guard.NonFiniteError: NaN/inf loss or gradient (beyond ``--skip_nan_steps``).
        common.run_guard.TrainingInterrupted: SIGTERM/SIGINT, after saving a checkpoint (a ``SystemExit``).
    """
    obj_args, args, guard_args = parse_args(argv)
    init_distributed()
    with start_run(args.results_dir, args.resume_from_checkpoint, arg_name="--results_dir") as run, \
            TrainingGuard(args.results_dir, guard_args.skip_nan_steps) as guard:
        train(obj_args, args, run, guard)


def train(obj_args, args, run, guard):
    """The training loop of :func:`main` (``run`` from ``start_run``, ``guard`` a ``TrainingGuard``)."""
    # ---- arguments
    rank, world = init_distributed()
    if args.global_batch_size % world:
        raise ValueError(f"--global_batch_size {args.global_batch_size} is not divisible by the {world} processes")
    cfg = check_objective_arguments(obj_args)
    resume = run.resume

    # ---- data: each rank reads its shard of the features
    dataset = FeatureDataset(obj_args.feature_path, seed=args.global_seed, random_flip=obj_args.random_flip)
    sampler = ResumableBatchSampler(dataset, batch_size=args.global_batch_size // world, shuffle=True, drop_last=True)
    if len(sampler) == 0:
        raise ValueError(f"{len(dataset)} features give no full batch of {args.global_batch_size // world} per process; lower --global_batch_size")
    loader = paddle.io.DataLoader(dataset, batch_sampler=sampler, num_workers=args.num_workers)
    logger.info("data: %d features in %s, %d batches/epoch/process", len(dataset), obj_args.feature_path, len(sampler))

    # ---- model, EMA, objective, optimizer
    seed_model_init(args.global_seed)  # same initial weights on every rank (DiT's idiom)
    transformer = build_transformer(cfg, obj_args)  # fresh, or --pretrained_model_name_or_path
    apply_model_toggles(transformer, args.recompute, args.enable_xformers_memory_efficient_attention, name="dit")
    logger.info(describe_fast_ops(apply_fast_ops(transformer, obj_args.fast_ops)))  # CPU: faster paths, same parameters and numbers
    ema = EMAModel(transformer.parameters(), decay=args.ema_decay) if args.use_ema else None
    objective = build_objective(cfg, obj_args)
    clip = paddle.nn.ClipGradByGlobalNorm(args.max_grad_norm) if args.max_grad_norm > 0 else None
    optimizer = paddle.optimizer.AdamW(learning_rate=args.learning_rate, parameters=transformer.parameters(), weight_decay=args.weight_decay, grad_clip=clip)
    logger.info("model: %s %s, %.2fM parameters; objective %s", cfg["model_type"], obj_args.config_file, count_parameters(transformer) / 1e6, type(objective).__name__)
    step, epoch = 0, 0
    if resume:
        state = load_checkpoint(resume)
        load_state_dict_strict(transformer, state["model"], resume)  # another model's checkpoint fails here, keys listed
        if ema is not None:
            if "ema" not in state:
                raise ValueError(f"--resume_from_checkpoint {resume!r} holds no EMA state (saved with --use_ema False); resume with --use_ema False")
            ema.load_state_dict(state["ema"])
        load_optimizer_state(optimizer, state["optimizer"], transformer.parameters())
        step, epoch, sampler.skip_batches = state["step"], state["epoch"], state["batches_in_epoch"]
        restore_rank_rng_state(state["rng"])  # each rank its own stream
        logger.info("resumed from %s at step %d", resume, step)
    else:
        seed_everything(args.global_seed)  # each rank its own noise stream: global_seed * world + rank
    model = wrap_data_parallel(transformer)
    train_log = TrainLogger(args.results_dir, args.log_every, enabled=is_main_process(), total_steps=args.max_steps, initial_step=step)
    num_classes = len(dataset.class_names) if dataset.class_names else cfg["num_classes"]
    preview = PreviewSampler(transformer, cfg, obj_args, objective, num_classes, args.global_seed, args.image_logging_steps, ema)

    def checkpoint(next_epoch, batches_in_epoch):
        """All ranks check the weights and gather their RNG states; rank 0 writes (model, EMA, optimizer, position)."""
        guard.check_weights(step, transformer.parameters())
        rngs = gather_rng_states()
        path = None
        if is_main_process():
            def extra(folder):
                if ema is not None:
                    with ema_weights(ema, transformer.parameters()):
                        save_model_folder(transformer, cfg, os.path.join(folder, "dit_ema"))

            state = {"model": transformer.state_dict(), "optimizer": optimizer_state(optimizer, transformer.parameters()), "step": step,
                     "epoch": next_epoch, "batches_in_epoch": batches_in_epoch, "rng": rngs, "args": {**asdict(obj_args), **asdict(args)}}
            if ema is not None:
                state["ema"] = ema.state_dict()
            path = save_checkpoint(args.results_dir, step, state, write_extra=extra, save_total_limit=args.save_total_limit, protect=[resume] if resume else ())
            logger.info("saved %s", path)
        barrier()
        return path

    # ---- loop
    transformer.train()
    while step < args.max_steps and epoch < args.epochs:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for i, batch in enumerate(loader, start=sampler.skip_batches):
            out = objective.training_losses(model, batch["latents"], {"y": batch["class_labels"]})
            out["loss"].backward()
            if guard.check_step(step + 1, out["loss"], transformer.parameters()):  # NaN/inf guard + stop signal, all ranks agree
                optimizer.step()
            optimizer.clear_grad()
            if ema is not None:
                ema.step(transformer.parameters())
            step += 1
            train_log.step(step, float(out["loss"]), lr=optimizer.get_lr(), num_images=args.global_batch_size)  # logs the mean over ranks
            if preview.due(step) and is_main_process():
                with Image.open(preview.save(args.results_dir, step)) as grid:
                    train_log.log_images("samples", grid, step)  # VisualDL, like the Trainer's ImageLoggingCallback
            if step % args.ckpt_every == 0 or step >= args.max_steps or guard.stop_requested:
                end_of_epoch = i + 1 >= len(sampler)
                path = checkpoint(epoch + 1 if end_of_epoch else epoch, 0 if end_of_epoch else i + 1)
                if guard.stop_requested:  # SIGTERM/SIGINT on some rank: saved, now exit non-zero
                    guard.interrupted(step, path)
            if step >= args.max_steps:
                break
        else:
            epoch += 1

    # ---- save: final/ (EMA weights) + final_raw/ (trained weights), the last grid
    guard.check_weights(step, transformer.parameters(), what="final model")
    if is_main_process():
        save_final_model(transformer, cfg, args.results_dir, ema)
        preview.save_last(args.results_dir, step)
        logger.info("done at step %d", step)
    train_log.close()
    shutdown_distributed()


if __name__ == "__main__":
    main()
