"""Train a ppdiffusers AutoencoderKL (the latent-diffusion VAE) from scratch, or warm-start the
encoder from a pretrained VAE and train a new (e.g. f16) decoder.

Objective: L1 + LPIPS reconstruction NLL with a learned log-variance, KL x ``--kl_weight`` and a
PatchGAN hinge loss switched on at ``--disc_start`` (see ``vae_losses.py``).  Generator and
discriminator take alternating steps with their own Adam optimizers; both are checkpointed.

Run ``python train_vae.py -h`` for the arguments; README.md has the launch commands.
"""
import argparse
import json
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import paddle
import paddle.distributed as dist

from common.arg_checks import require_non_negative, require_positive, require_range, usage_errors
from common.checkpoint import gather_rng_states, load_checkpoint, load_optimizer_state, optimizer_state, restore_rank_rng_state, save_checkpoint
from common.distributed import barrier, init_distributed, seed_everything, seed_model_init, shutdown_distributed
from common.fast_ops import add_fast_ops_argument, apply_fast_ops, describe_fast_ops
from common.images import ResumableBatchSampler, add_jpeg_draft_argument, sample_grid_path, save_grid
from common.logging_utils import TrainLogger, get_logger
from common.run_guard import TrainingGuard, add_guard_arguments, start_run
from common.weights import load_state_dict_strict
from vae_data import build_dataset
from vae_losses import LPIPSWithDiscriminator
from vae_model import VAEWithPosterior, build_vae, read_vae_config, resize_to


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train an AutoencoderKL (VAE) with LPIPS + PatchGAN losses.")
    # model
    parser.add_argument("--pretrained_model_name_or_path", type=str, default=None, help="pretrained VAE to warm-start from: a save_pretrained folder, a pipeline folder with vae/, or a hub id (needs a network)")
    parser.add_argument("--vae_config_file", type=str, default=None, help="AutoencoderKL JSON config (architecture); required with --from_scratch")
    parser.add_argument("--from_scratch", action="store_true", help="initialise every weight randomly from --vae_config_file")
    parser.add_argument("--ignore_keys", type=str, nargs="*", default=[], help="drop pretrained weights whose names start with these prefixes, e.g. decoder.")
    parser.add_argument("--init_from_ckpt", type=str, default=None, help="state dict (.pdparams) loaded on top of the model after it is built")
    parser.add_argument("--freeze_encoder", action="store_true", help="keep encoder and quant_conv fixed; train only the decoder side")
    parser.add_argument("--input_size", type=int, nargs=2, default=None, metavar=("H", "W"), help="encoder input size; the target stays --resolution (f8 encoder / f16 decoder: input_size = resolution / 2)")
    # data
    parser.add_argument("--dataset_type", type=str, default="text_image_pair", choices=["text_image_pair", "imagenet"])
    parser.add_argument("--file_list", type=str, default="./data/filelist/train.filelist.list", help="laion400m-format *.filelist.list / *.filelist (text_image_pair)")
    parser.add_argument("--imagenet_root", type=str, default=None, help="folder holding ILSVRC2012_train/data/<wnid>/*.JPEG (default $XDG_CACHE_HOME/autoencoders/data)")
    parser.add_argument("--resolution", type=int, default=512, help="training (target) image side in pixels")
    parser.add_argument("--min_crop_scale", type=float, default=1.0, help="random crops span [min_crop_scale, 1] of the short image side before resizing to --resolution")
    parser.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=True, help="horizontal flip augmentation")
    parser.add_argument("--num_workers", type=int, default=8, help="DataLoader worker processes per process (bench/README.md \"Readers\": 3 feed the f8/f16 recipe twice as fast as an H100 trains it; 8 leave room)")
    add_jpeg_draft_argument(parser)
    # optimisation
    parser.add_argument("--batch_size", type=int, default=4, help="images per device per step")
    parser.add_argument("--learning_rate", type=float, default=4.5e-6)
    parser.add_argument("--scale_lr", action="store_true", help="learning_rate *= world_size * batch_size")
    parser.add_argument("--max_train_steps", type=int, default=100000)
    parser.add_argument("--seed", type=int, default=23)
    # loss
    parser.add_argument("--disc_start", type=int, default=50001, help="global step at which the discriminator and the GAN term switch on")
    parser.add_argument("--kl_weight", type=float, default=1.0e-6)
    parser.add_argument("--disc_weight", type=float, default=0.5, help="multiplies the adaptive GAN weight")
    parser.add_argument("--disc_factor", type=float, default=1.0, help="GAN term factor once active (0 disables the GAN)")
    parser.add_argument("--disc_num_layers", type=int, default=3)
    parser.add_argument("--disc_loss", type=str, default="hinge", choices=["hinge", "vanilla"])
    parser.add_argument("--logvar_init", type=float, default=0.0, help="initial learned log-variance of the reconstruction NLL")
    parser.add_argument("--pixelloss_weight", type=float, default=1.0)
    parser.add_argument("--perceptual_weight", type=float, default=1.0, help="LPIPS weight; 0 trains without LPIPS (no VGG16 weights needed)")
    parser.add_argument("--lpips_backbone_path", type=str, default=None, help="local paddle.vision vgg16.pdparams (ImageNet) for LPIPS; default downloads it")
    # outputs
    parser.add_argument("--output_dir", type=str, default="autoencoder_outputs")
    parser.add_argument("--logging_steps", type=int, default=100)
    parser.add_argument("--image_logging_steps", type=int, default=500, help="write an input|reconstruction grid every N steps (a multiple of --logging_steps)")
    parser.add_argument("--save_steps", type=int, default=2000)
    parser.add_argument("--save_total_limit", type=int, default=None, help="keep only the newest N checkpoints")
    parser.add_argument("--resume_from_checkpoint", type=str, default=None, help="'latest' or a checkpoint-<step> folder")
    parser.add_argument("--calibrate_scaling_factor", type=int, default=0, help="after training, set the final VAE's config scaling_factor to 1 / std of its latents over this many batches (0 keeps the config value)")
    add_guard_arguments(parser)  # --skip_nan_steps
    add_fast_ops_argument(parser)  # --fast_ops (CPU speed-ups, on by default)
    args = parser.parse_args(argv)

    if args.from_scratch and not args.vae_config_file:
        parser.error("--from_scratch needs --vae_config_file (the architecture to build from scratch)")
    if not args.from_scratch and not args.pretrained_model_name_or_path:
        parser.error("give --pretrained_model_name_or_path (warm start) or --from_scratch with --vae_config_file")
    with usage_errors(parser):  # exit 2 naming the flag (or the config file), before anything is loaded
        check_args(args)
    return args


def check_args(args):
    """Range-check the parsed arguments and, when given, read ``--vae_config_file`` and check
    that ``--input_size`` / ``--resolution`` fit its down/upsampling (:func:`check_shapes`).

    Raises:
        ValueError: an argument out of range (e.g. ``--learning_rate must be > 0, got -1.0``), or
            a malformed ``--vae_config_file`` (named, with line and column).
        FileNotFoundError: ``--vae_config_file`` does not exist.
    """
    require_positive(args, "logging_steps", "image_logging_steps", "save_steps", "batch_size", "resolution", "input_size", "learning_rate",
                     "max_train_steps", "disc_num_layers")
    require_non_negative(args, "save_total_limit", "num_workers", "disc_start", "kl_weight", "disc_weight", "disc_factor", "pixelloss_weight", "perceptual_weight",
                         "calibrate_scaling_factor")
    require_range(args, "min_crop_scale", 0, 1, low_inclusive=False)
    if args.image_logging_steps % args.logging_steps:
        raise ValueError(f"--image_logging_steps ({args.image_logging_steps}) must be a multiple of --logging_steps ({args.logging_steps})")
    if args.vae_config_file:
        check_shapes(read_vae_config(args.vae_config_file), args.input_size, args.resolution)


def check_shapes(config, input_size, resolution):
    """Check that the decoder output of an encoder input ``input_size`` is ``resolution``.

    The encoder downsamples by ``2 ** (len(down_block_types) - 1)`` and the decoder upsamples by
    ``2 ** (len(up_block_types) - 1)`` (f8/f16 for config/vae.json).  Returns
    ``(encoder_hw, latent_hw, output_hw)``.

    Raises:
        ValueError: sizes that do not divide, or an output size != ``resolution``.
    """
    f_enc = 2 ** (len(config["down_block_types"]) - 1)
    f_dec = 2 ** (len(config["up_block_types"]) - 1)
    enc = tuple(input_size) if input_size else (resolution, resolution)
    if enc[0] % f_enc or enc[1] % f_enc:
        raise ValueError(f"--input_size {enc} must be divisible by the encoder's downsampling factor {f_enc}")
    latent = (enc[0] // f_enc, enc[1] // f_enc)
    out = (latent[0] * f_dec, latent[1] * f_dec)
    if out != (resolution, resolution):
        hint = f"--input_size {resolution * f_enc // f_dec} {resolution * f_enc // f_dec}" if resolution * f_enc % f_dec == 0 else "another --resolution"
        raise ValueError(f"encoder f{f_enc} / decoder f{f_dec}: input {enc} -> latent {latent} -> output {out}, but --resolution is {resolution}; use {hint}")
    return enc, latent, out


def allreduce_gradients(parameters, world_size):
    """Sum gradients over ranks (each rank back-propagated ``loss / world_size``).

    Done by hand rather than with ``paddle.DataParallel`` because one step runs two
    optimizers over two networks, ``paddle.grad`` (adaptive weight) and frozen parts.
    """
    if world_size > 1:
        for p in parameters:
            if p.grad is not None:
                dist.all_reduce(p.grad)


def main(argv=None):
    """Parse ``argv``, lock ``--output_dir`` and train; returns the final global step.

    Raises:
        common.run_guard.OutputDirInUseError: another run uses ``--output_dir``.
        common.run_guard.NonFiniteError: NaN/inf loss or gradient (beyond ``--skip_nan_steps``).
        common.run_guard.TrainingInterrupted: SIGTERM/SIGINT, after saving a checkpoint (a ``SystemExit``).
    """
    args = parse_args(argv)
    init_distributed()
    with start_run(args.output_dir, args.resume_from_checkpoint) as run, TrainingGuard(args.output_dir, args.skip_nan_steps) as guard:
        return train(args, run, guard)


def train(args, run, guard):
    """The training loop of :func:`main` (``run`` from ``start_run``, ``guard`` a ``TrainingGuard``)."""
    rank, world_size = init_distributed()
    logger = get_logger("train_vae")
    is_main = rank == 0

    # ---- resume point (read first: the data order depends on the step)
    ckpt = run.resume
    state = load_checkpoint(ckpt) if ckpt else None
    global_step, epoch, batch_in_epoch = (state["step"], state["epoch"], state["batch_in_epoch"]) if state else (0, 0, 0)

    # ---- data
    dataset, iterable = build_dataset(args.dataset_type, args.resolution, args.file_list, args.imagenet_root, args.min_crop_scale, args.random_flip, seed=args.seed,
                                      jpeg_draft=args.jpeg_draft)
    if iterable:
        dataset.resume_at(global_step, args.batch_size)  # the laion stream seeks past what was trained on, without decoding it
        loader = paddle.io.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers, drop_last=True)
        sampler = None
    else:
        sampler = ResumableBatchSampler(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)
        if len(sampler) == 0:
            raise ValueError(f"{len(dataset)} images per rank are fewer than --batch_size {args.batch_size}")
        loader = paddle.io.DataLoader(dataset, batch_sampler=sampler, num_workers=args.num_workers)

    # ---- models: the same initial weights on every rank (and fixed by --seed)
    seed_model_init(args.seed)
    vae, _ = build_vae(args.pretrained_model_name_or_path, args.vae_config_file, args.from_scratch, args.ignore_keys, args.init_from_ckpt, logger=logger if is_main else None)
    config = dict(vae.config)
    enc_hw, latent_hw, out_hw = check_shapes(config, args.input_size, args.resolution)
    loss_fn = LPIPSWithDiscriminator(
        disc_start=args.disc_start, logvar_init=args.logvar_init, kl_weight=args.kl_weight, pixelloss_weight=args.pixelloss_weight,
        disc_num_layers=args.disc_num_layers, disc_in_channels=config["out_channels"], disc_factor=args.disc_factor, disc_weight=args.disc_weight,
        perceptual_weight=args.perceptual_weight, disc_loss=args.disc_loss, lpips_backbone_path=args.lpips_backbone_path,
    )
    model = VAEWithPosterior(vae)
    fast_ops = apply_fast_ops(model, args.fast_ops)  # CPU: faster paths, same parameters and numbers
    apply_fast_ops(loss_fn, args.fast_ops)  # LPIPS + PatchGAN
    vae.train()
    loss_fn.train()
    seed_everything(args.seed)  # from here on each rank its own stream (posterior samples): seed * world_size + rank

    # ---- optimizers: generator (decoder side [+ encoder side] + logvar) and discriminator
    gen_params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    enc_params = list(vae.encoder.parameters()) + list(vae.quant_conv.parameters())
    if args.freeze_encoder:
        for p in enc_params:
            p.stop_gradient = True
    else:
        gen_params += enc_params
    gen_params.append(loss_fn.logvar)
    disc_params = list(loss_fn.discriminator.parameters())
    lr = args.learning_rate * (world_size * args.batch_size if args.scale_lr else 1)
    opt_ae = paddle.optimizer.Adam(learning_rate=lr, beta1=0.5, beta2=0.9, parameters=gen_params)
    opt_disc = paddle.optimizer.Adam(learning_rate=lr, beta1=0.5, beta2=0.9, parameters=disc_params)

    # ---- restore the training state
    if state is not None:
        from ppdiffusers import AutoencoderKL

        load_state_dict_strict(vae, AutoencoderKL.from_pretrained(ckpt).state_dict(), ckpt)  # another VAE's checkpoint fails here
        loss_fn.set_state_dict(state["loss"])  # discriminator + logvar
        load_optimizer_state(opt_ae, state["opt_ae"], gen_params)
        load_optimizer_state(opt_disc, state["opt_disc"], disc_params)
        restore_rank_rng_state(state["rng"])  # posterior sampling continues exactly, each rank its own stream
        logger.info("resumed from %s at step %d", ckpt, global_step)

    def batches():
        nonlocal epoch, batch_in_epoch
        if iterable:
            while True:
                for batch in loader:
                    yield batch
        while True:
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            sampler.skip_batches = batch_in_epoch
            for batch in loader:
                batch_in_epoch += 1
                yield batch
            epoch, batch_in_epoch = epoch + 1, 0

    tlog = TrainLogger(args.output_dir, args.logging_steps, enabled=is_main, name="train_vae")
    if is_main:
        os.makedirs(args.output_dir, exist_ok=True)
        logger.info("encoder input %s -> latent %s -> decoder output %s; %d trainable generator tensors, lr %.3g, world size %d",
                    enc_hw, latent_hw, out_hw, len(gen_params), lr, world_size)
        logger.info(describe_fast_ops(fast_ops))

    def save(step):
        """Checkpoint ``step`` (all ranks call it: weight check, RNG states of every rank; rank 0 writes)."""
        guard.check_weights(step, list(vae.parameters()) + list(loss_fn.parameters()))
        rngs = gather_rng_states()
        path = None
        if is_main:
            ckpt_state = {
                "opt_ae": optimizer_state(opt_ae, gen_params), "opt_disc": optimizer_state(opt_disc, disc_params),
                "loss": loss_fn.state_dict(), "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "rng": rngs, "args": vars(args),
            }
            path = save_checkpoint(args.output_dir, step, ckpt_state, write_extra=vae.save_pretrained, save_total_limit=args.save_total_limit,
                                   protect=[ckpt] if ckpt else ())
            logger.info("saved %s", path)
        barrier()
        return path

    # ---- loop
    last_layer = vae.decoder.conv_out.weight
    stream = batches()
    x = rec = None
    while global_step < args.max_train_steps:
        x = next(stream)["pixel_values"]
        enc_in = resize_to(x, args.input_size) if args.input_size else x
        # generator step
        rec, mean, logvar = model(enc_in, sample_posterior=True)
        ae_loss, logs = loss_fn.generator_loss(x, rec, mean, logvar, global_step, last_layer=last_layer)
        opt_ae.clear_grad()
        (ae_loss / world_size).backward()
        allreduce_gradients(gen_params, world_size)
        if guard.check_step(global_step + 1, ae_loss, gen_params):  # NaN/inf guard + stop signal, all ranks agree
            opt_ae.step()
        # discriminator step (skipped, and its weights untouched, before --disc_start)
        if loss_fn.disc_active(global_step):
            d_loss, d_logs = loss_fn.discriminator_loss(x, rec, global_step)
            opt_disc.clear_grad()
            (d_loss / world_size).backward()
            allreduce_gradients(disc_params, world_size)
            if guard.check_step(global_step + 1, d_loss, disc_params):
                opt_disc.step()
            logs.update(d_logs)
        global_step += 1

        record = tlog.step(global_step, logs["ae_loss"], lr=lr, num_images=x.shape[0] * world_size, extra={k: v for k, v in logs.items() if k != "ae_loss"})
        if record is not None and is_main:
            with open(os.path.join(args.output_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps({"step": global_step, **record}) + "\n")
        if global_step % args.image_logging_steps == 0 and is_main:
            log_reconstructions(x, rec, sample_grid_path(args.output_dir, global_step), tlog, global_step)
        if global_step % args.save_steps == 0 or guard.stop_requested:
            path = save(global_step)
            if guard.stop_requested:  # SIGTERM/SIGINT on some rank: saved, now exit non-zero
                guard.interrupted(global_step, path)

    # ---- final save: last checkpoint, a from_pretrained folder and a reconstruction grid
    if global_step == 0 or global_step % args.save_steps:
        save(global_step)
    if is_main:
        if args.calibrate_scaling_factor:
            factor = calibrate_scaling_factor(vae, stream, args.calibrate_scaling_factor, args.input_size)
            logger.info("scaling_factor %.5f -> %.5f (1 / std of latents over %d batches)", config["scaling_factor"], factor, args.calibrate_scaling_factor)
            vae.register_to_config(scaling_factor=factor)
        final_dir = os.path.join(args.output_dir, "final")
        vae.save_pretrained(final_dir)
        if x is not None and global_step % args.image_logging_steps:  # the last step's grid (unless just written)
            log_reconstructions(x, rec, sample_grid_path(args.output_dir, global_step), tlog, global_step)
        logger.info("final VAE written to %s (AutoencoderKL.from_pretrained loads it)", final_dir)
    # every rank reports its weights so a multi-process run can be checked for drift
    checksum = sum(float(p.astype("float64").abs().sum()) for p in vae.parameters())
    print(f"[rank {rank}] final weights checksum {checksum:.8e}", flush=True)
    tlog.close()
    shutdown_distributed()
    return global_step


def calibrate_scaling_factor(vae, stream, num_batches, input_size=None):
    """``1 / std`` of posterior samples over ``num_batches`` batches from ``stream`` -- the
    factor that gives the diffusion model unit-variance latents (how Stable Diffusion's 0.18215
    was chosen, Rombach et al. 2022 sec. G)."""
    samples = []
    vae.eval()
    with paddle.no_grad():
        for _ in range(num_batches):
            x = next(stream)["pixel_values"]
            x = resize_to(x, input_size) if input_size else x
            samples.append(vae.encode(x).latent_dist.sample().flatten())
    vae.train()
    return float(1.0 / paddle.concat(samples).std())


def log_reconstructions(x, rec, path, tlog, step, max_images=8):
    """Save an input | reconstruction grid (one pair per row) to ``path`` and VisualDL."""
    import numpy as np
    from common.images import make_grid

    pairs = []
    for i in range(min(max_images, x.shape[0])):
        pairs += [x[i].numpy(), rec[i].detach().clip(-1, 1).numpy()]
    upscale = max(1, 128 // x.shape[-1])
    save_grid(pairs, path, nrow=2, upscale=upscale)
    tlog.log_images("reconstructions", make_grid([np.asarray(p) for p in pairs], nrow=2), step)


if __name__ == "__main__":
    main()
