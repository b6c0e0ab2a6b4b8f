"""Assembling a ``StableDiffusionPipeline`` from trained parts, swapping its scheduler, sampling
a prompt grid, and loading the parts by name (``--*_name_or_path`` over
``--pretrained_model_name_or_path``)."""
import os

import paddle

from common.logging_utils import get_logger

__all__ = [
    "SCHEDULERS",
    "make_training_scheduler",
    "make_inference_scheduler",
    "build_pipeline",
    "set_scheduler",
    "sample_prompt_grid",
    "load_unet",
    "load_text_encoder",
    "resolve_component",
]

logger = get_logger("sd")

# --scheduler choices -> ppdiffusers scheduler class names
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "dpm-solver": "DPMSolverMultistepScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
}


def make_training_scheduler(prediction_type=None, pretrained_model_name_or_path=None):
    """The training ``DDPMScheduler``: the pretrained pipeline's ``scheduler/`` config when a
    pipeline is given (fine-tuning), else Stable Diffusion's schedule (1000 steps, scaled-linear
    betas 0.00085..0.012).

    ``prediction_type`` (``epsilon`` / ``v_prediction``) overrides the pipeline's; ``None`` keeps
    it (as upstream ``train_text_to_image``), and means ``epsilon`` when training from scratch.
    """
    from ppdiffusers import DDPMScheduler

    if pretrained_model_name_or_path:
        scheduler = DDPMScheduler.from_pretrained(pretrained_model_name_or_path, subfolder="scheduler")
        if prediction_type and scheduler.config.prediction_type != prediction_type:
            scheduler = DDPMScheduler.from_config(scheduler.config, prediction_type=prediction_type)
        return scheduler
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, prediction_type=prediction_type or "epsilon")


def make_inference_scheduler(training_scheduler, name="ddim"):
    """An inference scheduler (``SCHEDULERS[name]``) with the training schedule's betas and
    prediction type (``steps_offset=1``, no sample clipping, as Stable Diffusion ships DDIM/PNDM).

    Raises:
        ValueError: unknown ``name``.
    """
    import ppdiffusers

    if name not in SCHEDULERS:
        raise ValueError(f"--scheduler must be one of {sorted(SCHEDULERS)}, got {name!r}")
    cls = getattr(ppdiffusers, SCHEDULERS[name])
    extra = {"steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True}
    return cls.from_config(training_scheduler.config, **extra)


def set_scheduler(pipe, name):
    """Swap ``pipe.scheduler`` for ``SCHEDULERS[name]`` built ``from_config`` of the current one.

    Raises:
        ValueError: unknown ``name``.
    """
    import ppdiffusers

    if name not in SCHEDULERS:
        raise ValueError(f"--scheduler must be one of {sorted(SCHEDULERS)}, got {name!r}")
    pipe.scheduler = getattr(ppdiffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config)
    return pipe


def build_pipeline(vae, text_encoder, tokenizer, unet, scheduler):
    """``StableDiffusionPipeline`` from parts, without safety checker / feature extractor."""
    from ppdiffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@paddle.no_grad()
def sample_prompt_grid(pipe, prompts, resolution, num_inference_steps=25, guidance_scale=7.5, seed=0, negative_prompt=None):
    """Generate one image per prompt (same seed for all) and return the list of PIL images.

    Runs the models in eval mode and puts them back in their previous mode; paddle's global RNG
    state is saved and restored, so training randomness is not disturbed.
    """
    modes = {m: m.training for m in (pipe.unet, pipe.text_encoder, pipe.vae)}
    for m in modes:
        m.eval()
    rng = paddle.get_rng_state()
    try:
        images = []
        for prompt in prompts:
            generator = paddle.Generator().manual_seed(seed)
            out = pipe(prompt, height=resolution, width=resolution, num_inference_steps=num_inference_steps,
                       guidance_scale=guidance_scale, negative_prompt=negative_prompt, generator=generator)
            images.append(out.images[0])
        return images
    finally:
        paddle.set_rng_state(rng)
        for m, was_training in modes.items():
            m.train() if was_training else m.eval()


def resolve_component(explicit, pretrained, subfolder):
    """``(name_or_path, subfolder)`` for one part: an explicit ``--*_name_or_path`` wins; a hub id
    with a trailing part name (``CompVis/stable-diffusion-v1-4/vae``) or a local folder holding the
    part in ``subfolder`` is split; else the part comes from ``--pretrained_model_name_or_path``;
    ``(None, None)`` when neither is given."""
    if explicit:
        if os.path.isdir(explicit) and os.path.isdir(os.path.join(explicit, subfolder)) and not os.path.isfile(os.path.join(explicit, "config.json")):
            return explicit, subfolder
        if not os.path.exists(explicit) and explicit.count("/") == 2 and explicit.rsplit("/", 1)[1] == subfolder:
            return explicit.rsplit("/", 1)[0], subfolder
        return explicit, None
    if pretrained:
        return pretrained, subfolder
    return None, None


def _check_local(name, flag):
    if name and str(name).startswith((".", "/")) and not os.path.exists(name):
        raise FileNotFoundError(f"{flag} {name!r} does not exist")


def load_unet(name_or_path, subfolder=None, seed=0):
    """A ``UNet2DConditionModel``: random init from a ``*.json`` config, else ``from_pretrained``.

    Raises:
        FileNotFoundError: a local path that does not exist.
        ValueError: a JSON config that is malformed (named, with line and column) or does not
            describe a UNet2DConditionModel.
    """
    from ppdiffusers import UNet2DConditionModel

    _check_local(name_or_path, "--unet_name_or_path")
    if str(name_or_path).endswith(".json"):
        from common.arg_checks import read_json_config

        config = read_json_config(name_or_path, "--unet_name_or_path")  # a malformed file is named
        if config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
            raise ValueError(f"--unet_name_or_path {name_or_path!r} describes a {config['_class_name']}, expected UNet2DConditionModel")
        state = paddle.get_rng_state()
        paddle.seed(seed)
        unet = UNet2DConditionModel.from_config(config)
        paddle.set_rng_state(state)
        logger.info("UNet: randomly initialised from %s (%.1fM parameters)", name_or_path, sum(p.size for p in unet.parameters()) / 1e6)
        return unet
    kwargs = {"subfolder": subfolder} if subfolder else {}
    unet = UNet2DConditionModel.from_pretrained(name_or_path, **kwargs)
    logger.info("UNet: loaded from %s%s", name_or_path, f" ({subfolder})" if subfolder else "")
    return unet


def load_text_encoder(name_or_path, subfolder=None):
    """``CLIPTextModel.from_pretrained`` (ppdiffusers.transformers, the class the pipelines use).

    Raises:
        FileNotFoundError: a local path that does not exist.
    """
    from ppdiffusers.transformers import CLIPTextModel

    _check_local(name_or_path, "--text_encoder_name_or_path")
    kwargs = {"subfolder": subfolder} if subfolder else {}
    model = CLIPTextModel.from_pretrained(name_or_path, **kwargs)
    logger.info("text encoder: loaded from %s%s", name_or_path, f" ({subfolder})" if subfolder else "")
    return model
