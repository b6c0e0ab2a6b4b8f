"""Sampling speed (images/s) of every demo's inference pipeline, random weights, on this machine.

    python bench/bench_sampling.py                          # all rows
    python bench/bench_sampling.py --rows ddpm dit          # some rows
    python bench/bench_sampling.py --num_inference_steps 2  # every row with 2 steps (smoke run)
    python bench/bench_sampling.py --compare torch --torch_python /path/to/venv/bin/python   # and PyTorch + diffusers

Rows (each its demo's own config and builders; random weights: the cost of a sampling step does
not depend on the weight values):

  ddpm  ``DDPMPipeline`` with run_train_ddpm.sh's UNet (``denoising_diffusion.build_unet``: 32 px,
        16/32/64 channels, 1 layer per block, no attention) and the DDIM scheduler that
        ddpm_tutorial/sample.py swaps in (training schedule, ``prediction_type`` sample), 50 steps, batch 16
  dit   ``DiTPipeline`` as class_conditional/run_demo.sh exports it: the DiT of
        ``config/DiT_demo.json`` mapped onto ppdiffusers' ``Transformer2DModel``
        (``models.export.to_transformer2d``), the demo VAE architecture (``common.vae.load_vae("random")``),
        the export's DDIM scheduler; 25 steps, guidance 4.0 (the transformer runs on 2 x 10 latents), 10 class labels
  sd    ``StableDiffusionPipeline`` of stable_diffusion/run_train_demo.sh: config/unet_demo.json, the demo
        CLIP text encoder (config/text_encoder_demo.json, sized to a CLIP BPE tokenizer trained on the demo
        captions, 16 tokens), the demo VAE; ``DPMSolverMultistepScheduler`` from the demo's v-prediction
        schedule (infer.py --scheduler dpm-solver), 25 steps, guidance 4.0, 10 prompts, 32 px
  ldm   ``LDMTextToImagePipeline`` as ldm_uvit/generate_pipelines.py exports the demo: U-ViT
        config/uvit_t2i_demo.json (``LDMUViTT2IModel``, exported ``sample_size``/``latent_size``), the demo
        LDMBert text encoder and word tokenizer (8 tokens), the demo VAE, DDIM (v-prediction); 25 steps
        (run_demo.sh), guidance 4.0, 10 prompts

Timing: per process one warm-up call with 2 steps, then ``--calls`` timed full pipeline calls
(``bench_common.time_steps``: ms/call is their median); images/s = images per call / s per call.
All pipelines return ``output_type="np"`` (no PIL conversion).  With ``--compare torch`` the ddpm,
dit and sd rows also run the same configs (read back from the built Paddle models) in diffusers'
``DDPMPipeline`` / ``DiTPipeline`` / ``StableDiffusionPipeline`` (bench/torch_mirrors.py); ldm has
no PyTorch side (diffusers has no U-ViT).  Each row runs in its own process (harness:
bench/bench_common.py).  Not a test: numbers depend on the machine.
"""
import argparse
import os
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)
from bench_common import add_bench_arguments, bench_fast_ops, check_bench_arguments, config_dict, emit, run_rows, time_steps  # noqa: E402

PROMPTS = [f"a handwritten digit {w}" for w in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")]
ROWS = {
    "ddpm": dict(steps=100, batch=16),
    "dit": dict(steps=25, guidance=4.0, labels=list(range(10))),
    "sd": dict(steps=25, guidance=4.0, resolution=32, tokens=16),
    "ldm": dict(steps=25, guidance=4.0),
}
WARMUP_STEPS = 2


def _count(*models):
    return int(sum(int(p.size) for m in models for p in m.parameters()))


def _time_pipeline(call, steps, calls):
    """Warm up with a ``WARMUP_STEPS``-step call, then time ``calls`` full calls of ``steps`` steps."""
    call(min(steps, WARMUP_STEPS))
    return time_steps(lambda: call(steps), 0, calls)


def _result(name, timing, images, steps, params, params_other=None, torch=None, torch_note=None, **extra):
    out = dict(timing, row=name, params=params, batch=images, steps=steps, images_per_s=images * 1000.0 / timing["ms_per_step"], **extra)
    if params_other is not None:
        out["params_other"] = params_other
    if torch is not None:
        out["torch"] = torch
    if torch_note:
        out["torch_note"] = torch_note
    return out


def row_ddpm(steps, calls):
    import paddle
    from ppdiffusers import DDPMPipeline, DDPMScheduler

    sys.path.insert(0, os.path.join(REPO, "ddpm_tutorial"))
    from denoising_diffusion import build_unet

    row = ROWS["ddpm"]
    paddle.seed(0)
    unet = build_unet(32, (16, 32, 64, 128), (), layers_per_block=1, channels=1)  # run_train_ddpm.sh (GRAYSCALE=1)
    unet.eval()
    training = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="sample")  # train_unconditional.py
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_config(training.config))  # SAMPLER=ddpm: ancestral, respaced
    bench_fast_ops(pipe)  # as the sampling scripts do on CPU (--fast_ops)
    pipe.set_progress_bar_config(disable=True)
    b = row["batch"]

    def call(n):
        pipe(batch_size=b, num_inference_steps=n, generator=paddle.Generator().manual_seed(0), output_type="np")

    timing = _time_pipeline(call, steps, calls)
    params = _count(unet)
    return _result(f"ddpm: DDPMPipeline, ancestral DDPM (UNet {params / 1e6:.2f}M, 32 px, 1 ch), {steps} steps", timing, b, steps, params,
                   torch=dict(kind="sampling_ddpm", unet=config_dict(unet.config), scheduler=config_dict(pipe.scheduler.config), scheduler_class="DDPMScheduler",
                              batch=b, num_inference_steps=steps, warmup_steps=min(steps, WARMUP_STEPS), warmup=0, steps=calls))


def row_dit(steps, calls):
    import paddle
    from ppdiffusers import DDIMScheduler, DiTPipeline

    sys.path.insert(0, os.path.join(REPO, "class_conditional"))
    from models import DiT, load_model_config, model_kwargs
    from models.export import to_transformer2d

    from common.vae import load_vae

    row = ROWS["dit"]
    cfg = load_model_config(os.path.join(REPO, "class_conditional", "config", "DiT_demo.json"))  # run_demo.sh CONFIG_FILE
    paddle.seed(0)
    transformer = to_transformer2d(DiT(**model_kwargs(cfg)), cfg)  # tools/convert_dit_to_ppdiffusers.py
    vae = load_vae("random")[0]
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True)
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler, id2label={str(i): str(i) for i in range(10)})
    bench_fast_ops(pipe)  # as the sampling scripts do on CPU (--fast_ops)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # infer_demo_dit.py
    pipe.set_progress_bar_config(disable=True)
    labels, g = row["labels"], row["guidance"]

    def call(n):
        pipe(class_labels=labels, num_inference_steps=n, guidance_scale=g, generator=paddle.Generator().manual_seed(42), output_type="np")

    timing = _time_pipeline(call, steps, calls)
    params = _count(transformer)
    return _result(f"dit: DiTPipeline (DiT_demo -> Transformer2DModel {params / 1e6:.2f}M, 4x8x8), {steps} DDIM steps, cfg {g}", timing,
                   len(labels), steps, params, params_other=_count(vae),
                   torch=dict(kind="sampling_dit", transformer=config_dict(transformer.config), vae=config_dict(vae.config),
                              scheduler=config_dict(pipe.scheduler.config), labels=labels, guidance_scale=g, batch=len(labels),
                              num_inference_steps=steps, warmup_steps=min(steps, WARMUP_STEPS), warmup=0, steps=calls))


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def row_sd(steps, calls):
    import paddle

    sys.path.insert(0, os.path.join(REPO, "stable_diffusion"))
    from ppdiffusers import DPMSolverMultistepScheduler
    from sd_dataset import collect_captions
    from sd_pipeline_utils import build_pipeline, load_unet, make_inference_scheduler, make_training_scheduler
    from sd_text_encoder import build_text_encoder_from_config, load_clip_tokenizer, train_clip_bpe_tokenizer

    from bench_stable_diffusion import CLIP_TEXT_KEYS
    from common.demo_data import ensure_demo_data
    from common.vae import load_vae

    row = ROWS["sd"]
    cfg_dir = os.path.join(REPO, "stable_diffusion", "config")
    captions = collect_captions(os.path.join(ensure_demo_data(), "laion_digits", "filelist", "digits.filelist.list"))
    with tempfile.TemporaryDirectory(prefix="bench_sampling_tok_") as tok_dir:  # the demo trains its tokenizer on the captions
        train_clip_bpe_tokenizer(captions, tok_dir, 1024, row["tokens"])
        tokenizer = load_clip_tokenizer(tok_dir, model_max_length=row["tokens"])
        tok_files = {n: _read(os.path.join(tok_dir, n)) for n in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")}
    text_encoder = build_text_encoder_from_config(os.path.join(cfg_dir, "text_encoder_demo.json"), tokenizer)
    unet = load_unet(os.path.join(cfg_dir, "unet_demo.json"))
    vae = load_vae("random")[0]
    for m in (text_encoder, unet, vae):
        m.eval()
    ddim = make_inference_scheduler(make_training_scheduler("v_prediction"), "ddim")  # the saved pipeline's scheduler/
    pipe = build_pipeline(vae, text_encoder, tokenizer, unet, DPMSolverMultistepScheduler.from_config(ddim.config))  # --scheduler dpm-solver
    bench_fast_ops(pipe)  # as the sampling scripts do on CPU (--fast_ops)
    r, g = row["resolution"], row["guidance"]

    def call(n):
        pipe(PROMPTS, height=r, width=r, num_inference_steps=n, guidance_scale=g, generator=paddle.Generator().manual_seed(23), output_type="np")

    timing = _time_pipeline(call, steps, calls)
    params = _count(unet)
    text_cfg = {k: v for k, v in text_encoder.config.to_dict().items() if k in CLIP_TEXT_KEYS}
    return _result(f"sd: StableDiffusionPipeline (unet_demo {params / 1e6:.2f}M + demo CLIP + demo VAE, {r} px), {steps} DPM-Solver steps, cfg {g}",
                   timing, len(PROMPTS), steps, params, params_other=_count(vae, text_encoder),
                   torch=dict(kind="sampling_sd", unet=config_dict(unet.config), vae=config_dict(vae.config), text=text_cfg,
                              tokenizer_files=tok_files, scheduler=config_dict(pipe.scheduler.config), prompts=PROMPTS, resolution=r,
                              guidance_scale=g, batch=len(PROMPTS), num_inference_steps=steps, warmup_steps=min(steps, WARMUP_STEPS),
                              warmup=0, steps=calls))


def row_ldm(steps, calls):
    import json

    import paddle
    from ppdiffusers import LDMTextToImagePipeline

    sys.path.insert(0, os.path.join(REPO, "ldm_uvit"))
    from uvit_diffusion import make_ddim_scheduler
    from uvit_ldm_unet import LDMUViTT2IModel, pipeline_sample_size
    from uvit_text_encoder import build_demo_text_encoder

    from common.arg_checks import read_json_config
    from common.demo_data import ensure_demo_data
    from common.vae import load_vae

    row = ROWS["ldm"]
    # generate_pipelines.export_unet_config on the demo config (that module pulls in the paddlenlp Trainer, so it is not imported here)
    config = {k: v for k, v in read_json_config(os.path.join(REPO, "ldm_uvit", "config", "uvit_t2i_demo.json"), "U-ViT config").items()
              if not k.startswith("_")}
    vae = load_vae("random")[0]
    latent = config["sample_size"]
    config = dict(config, sample_size=pipeline_sample_size(latent, 2 ** (len(vae.config.block_out_channels) - 1)), latent_size=latent)
    with open(os.path.join(ensure_demo_data(), "digits_coco.jsonl")) as f:  # the captions extract_features.py builds the vocabulary from
        captions = [json.loads(line)["caption"] for line in f if line.strip()]
    with tempfile.TemporaryDirectory(prefix="bench_sampling_ldmbert_") as tmp:
        bert, tokenizer = build_demo_text_encoder(captions, tmp, config["num_text_tokens"])
    paddle.seed(0)
    unet = LDMUViTT2IModel(**config)
    unet.eval()
    pipe = LDMTextToImagePipeline(vqvae=vae, bert=bert, tokenizer=tokenizer, unet=unet, scheduler=make_ddim_scheduler("v_prediction"))
    bench_fast_ops(pipe)  # as the sampling scripts do on CPU (--fast_ops)
    pipe.set_progress_bar_config(disable=True)
    g = row["guidance"]

    def call(n):
        pipe(PROMPTS, num_inference_steps=n, guidance_scale=g, generator=paddle.Generator().manual_seed(1234), output_type="np")

    timing = _time_pipeline(call, steps, calls)
    params = _count(unet)
    return _result(f"ldm: LDMTextToImagePipeline (U-ViT demo {params / 1e6:.2f}M + demo LDMBert + demo VAE, 32 px), {steps} DDIM steps, cfg {g}",
                   timing, len(PROMPTS), steps, params, params_other=_count(vae, bert), torch_note="diffusers has no U-ViT")


ROW_FUNCS = {"ddpm": row_ddpm, "dit": row_dit, "sd": row_sd, "ldm": row_ldm}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--num_inference_steps", type=int, default=None, help="steps of every row (default: each demo's own: ddpm 100, others 25)")
    p.add_argument("--calls", type=int, default=3, help="timed pipeline calls per process (after one 2-step warm-up call)")
    add_bench_arguments(p)
    args = p.parse_args()
    check_bench_arguments(p, args)
    if args.num_inference_steps is not None and args.num_inference_steps < 1:
        p.error(f"--num_inference_steps must be >= 1, got {args.num_inference_steps}")
    if args.calls < 1:
        p.error(f"--calls must be >= 1, got {args.calls}")
    if args.child:
        from common.cpu_env import apply_cpu_env

        apply_cpu_env(verbose=False)
        emit(ROW_FUNCS[args.child](args.num_inference_steps or ROWS[args.child]["steps"], args.calls))
        return
    child_args = ["--calls", args.calls] + (["--num_inference_steps", args.num_inference_steps] if args.num_inference_steps else [])
    run_rows(__file__, args.rows, args, child_args)


if __name__ == "__main__":
    main()
