"""Argument checks at start: every training / extraction script refuses out-of-range numbers and
malformed config files with a message naming the flag (or file), the value and what was expected,
before it loads data or models (issue 13, item 13).

Argument parsing only, in-process: nothing here trains, encodes or writes outside ``tmp_path``.
argparse scripts exit 2 with the message on stderr; PdArgumentParser scripts raise ValueError.
"""
import importlib.util
import json
import logging
import os
import sys

import pytest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
_MODULES = {}


def _script(relpath, *folders):
    """Import the script ``relpath`` under a unique module name (``folders`` on sys.path while it
    imports its siblings); cached, so paddle & co. load once."""
    if relpath not in _MODULES:
        saved = list(sys.path)
        sys.path[:0] = [os.path.join(REPO_ROOT, f) for f in folders]
        try:
            name = "args_" + relpath.replace("/", "_").replace(".py", "")
            spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, relpath))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            sys.path[:] = saved
        _MODULES[relpath] = module
    return _MODULES[relpath]


def _usage_error(parse, argv, capsys):
    """Run an argparse ``parse(argv)`` that must fail; returns its stderr (exit status 2 checked)."""
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def bad_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"sample_size": 8,\n  "in_channels": 4\n  "clip_dim": 64}\n')
    return str(path)


# ------------------------------------------------------------------------------- the shared helper
def test_read_json_config_names_the_file_line_and_column(bad_json, tmp_path):
    from common.arg_checks import read_json_config

    with pytest.raises(ValueError, match=r"--config_file '.*broken\.json' is not valid JSON: line 3 col 3: Expecting ',' delimiter"):
        read_json_config(bad_json, "--config_file")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        read_json_config(str(tmp_path / "list.json"), "--config_file")
    with pytest.raises(FileNotFoundError, match="--config_file 'nope.json' does not exist"):
        read_json_config("nope.json", "--config_file")


def test_resume_latest_without_checkpoint_says_so(tmp_path, caplog):
    from common.checkpoint import resolve_checkpoint

    with caplog.at_level(logging.INFO):
        assert resolve_checkpoint("latest", str(tmp_path)) is None
    assert f"no checkpoint in {tmp_path}: starting from step 0" in caplog.text


# ------------------------------------------------------------------------------- ddpm_tutorial
DDPM_BAD = [
    (["--checkpointing_steps", "0"], "--checkpointing_steps must be > 0, got 0"),
    (["--ddpm_num_inference_steps", "0"], "--ddpm_num_inference_steps must be in [1, 1000], got 0"),
    (["--ddpm_num_inference_steps", "2000"], "--ddpm_num_inference_steps must be in [1, 1000], got 2000"),
    (["--max_train_steps", "-5"], "--max_train_steps must be > 0, got -5"),
    (["--max_train_steps", "0"], "--max_train_steps must be > 0, got 0"),
    (["--learning_rate", "-1"], "--learning_rate must be > 0, got -1.0"),
    (["--logging_steps", "0"], "--logging_steps must be > 0, got 0"),
    (["--save_images_steps", "-1"], "--save_images_steps must be >= 0, got -1"),
    (["--resolution", "30"], "--resolution must be a positive multiple of 4"),
    (["--attention_levels", "5"], "--attention_levels 5: levels [5] out of range 0..2"),
    (["--ema_max_decay", "1.5"], "--ema_max_decay must be in [0, 1], got 1.5"),
]


@pytest.mark.parametrize("argv,message", DDPM_BAD, ids=[a[0] + "=" + a[1] for a, _ in DDPM_BAD])
def test_ddpm_rejects(argv, message, capsys):
    ddpm = _script("ddpm_tutorial/train_unconditional.py", "ddpm_tutorial")
    assert message in _usage_error(ddpm.parse_args, argv, capsys)


def test_ddpm_valid_arguments_parse():
    ddpm = _script("ddpm_tutorial/train_unconditional.py", "ddpm_tutorial")
    assert ddpm.parse_args([]).checkpointing_steps == 500  # defaults
    args = ddpm.parse_args(["--resolution", "32", "--block_out_channels", "32", "64", "128", "--attention_levels", "2", "--max_train_steps", "1000",
                            "--save_images_steps", "0", "--checkpoints_total_limit", "0", "--ddpm_num_inference_steps", "1000"])
    assert args.max_train_steps == 1000 and args.save_images_steps == 0  # 0: sample only at the end


# ------------------------------------------------------------------------------- autoencoder
VAE_DEMO = ["--from_scratch", "--vae_config_file", os.path.join(REPO_ROOT, "autoencoder", "config", "vae_demo.json"), "--resolution", "32"]
VAE_BAD = [
    (["--learning_rate", "-1"], "--learning_rate must be > 0, got -1.0"),
    (["--max_train_steps", "-5"], "--max_train_steps must be > 0, got -5"),
    (["--max_train_steps", "0"], "--max_train_steps must be > 0, got 0"),
    (["--save_steps", "0"], "--save_steps must be > 0, got 0"),
    (["--resolution", "30"], "must be divisible by the encoder's downsampling factor 4"),
    (["--min_crop_scale", "0"], "--min_crop_scale must be in (0, 1], got 0.0"),
    (["--kl_weight", "-1"], "--kl_weight must be >= 0, got -1.0"),
]


@pytest.mark.parametrize("argv,message", VAE_BAD, ids=[a[0] + "=" + a[1] for a, _ in VAE_BAD])
def test_vae_rejects(argv, message, capsys):
    vae = _script("autoencoder/train_vae.py", "autoencoder")
    assert message in _usage_error(vae.parse_args, VAE_DEMO + argv, capsys)


def test_vae_config_file_errors_name_the_file(bad_json, capsys):
    vae = _script("autoencoder/train_vae.py", "autoencoder")
    err = _usage_error(vae.parse_args, ["--from_scratch", "--vae_config_file", bad_json], capsys)
    assert f"--vae_config_file {bad_json!r} is not valid JSON: line 3 col 3" in err
    err = _usage_error(vae.parse_args, ["--from_scratch", "--vae_config_file", "missing.json"], capsys)
    assert "--vae_config_file 'missing.json' does not exist" in err


def test_vae_valid_arguments_parse():
    vae = _script("autoencoder/train_vae.py", "autoencoder")
    args = vae.parse_args(VAE_DEMO + ["--max_train_steps", "500", "--learning_rate", "1e-3", "--perceptual_weight", "0", "--save_total_limit", "2"])
    assert args.max_train_steps == 500


# ------------------------------------------------------------------------------- class_conditional
CC_NOTRAINER_BAD = [
    (["--ckpt_every", "0"], "--ckpt_every must be > 0, got 0"),
    (["--max_steps", "-1"], "--max_steps must be > 0, got -1"),
    (["--log_every", "0"], "--log_every must be > 0, got 0"),
    (["--learning_rate", "-1"], "--learning_rate must be > 0, got -1.0"),
    (["--global_batch_size", "0"], "--global_batch_size must be > 0, got 0"),
    (["--epochs", "0"], "--epochs must be > 0, got 0"),
    (["--num_inference_steps", "0"], "--num_inference_steps must be > 0, got 0"),
    # SiT-only flags with a DiT config would be ignored: refused, naming each changed flag
    (["--path_type", "GVP"], "--path_type GVP: SiT (transport) option(s), but --config_file 'config/DiT_demo.json' has model_type DiT"),
    (["--prediction", "score", "--train_eps", "0.01"], "--prediction score, --train_eps 0.01: SiT (transport) option(s)"),
    (["--sampling_method", "heun"], "--sampling_method heun: SiT (transport) option(s)"),
    (["--loss_weight", "likelihood"], "--loss_weight likelihood: SiT (transport) option(s)"),
]


@pytest.mark.parametrize("argv,message", CC_NOTRAINER_BAD, ids=[a[0] + "=" + a[1] for a, _ in CC_NOTRAINER_BAD])
def test_class_conditional_notrainer_rejects(argv, message):
    cc = _script("class_conditional/train_image_generation_notrainer.py", "class_conditional")
    with pytest.raises(ValueError) as e:
        cc.parse_args(["--config_file", "config/DiT_demo.json", *argv])
    assert message in str(e.value)


CC_TRAINER_BAD = [
    (["--max_steps", "-5"], "--max_steps must be > 0 (or -1 with --do_train and --num_train_epochs > 0), got -5"),
    (["--max_steps", "0"], "--max_steps must be > 0 (or -1 with --do_train and --num_train_epochs > 0), got 0"),
    (["--max_steps", "-1"], "nothing to train: --max_steps is -1"),
    (["--max_steps", "-1", "--do_train", "--num_train_epochs", "0"], "--max_steps -1 (paddlenlp's default: train --num_train_epochs epochs) needs --num_train_epochs > 0"),
    (["--max_steps", "10", "--learning_rate", "-1"], "--learning_rate must be > 0, got -1.0"),
    (["--max_steps", "10", "--save_steps", "0"], "--save_steps must be > 0, got 0"),
    (["--max_steps", "10", "--logging_steps", "-1"], "--logging_steps must be > 0, got -1"),
    (["--max_steps", "10", "--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be > 0, got 0"),
    (["--max_steps", "10", "--ema_decay", "2"], "--ema_decay must be in [0, 1], got 2.0"),
    (["--max_steps", "10", "--path_type", "VP"], "--path_type VP: SiT (transport) option(s), but --config_file 'config/DiT_demo.json' has model_type DiT"),
    (["--max_steps", "10", "--sample_eps", "0.001"], "--sample_eps 0.001: SiT (transport) option(s)"),
    (["--max_steps", "10", "--dp_degree", "2"], "--dp_degree"),  # removed: it only restated the launch
]


@pytest.mark.parametrize("argv,message", CC_TRAINER_BAD, ids=[" ".join(a) for a, _ in CC_TRAINER_BAD])
def test_class_conditional_trainer_rejects(argv, message, tmp_path):
    cc = _script("class_conditional/train_image_generation_trainer.py", "class_conditional")
    with pytest.raises(ValueError) as e:
        cc.parse_args(["--output_dir", str(tmp_path / "out"), "--config_file", "config/DiT_demo.json", *argv])
    assert message in str(e.value)


def test_class_conditional_config_file_errors_name_the_file(bad_json, tmp_path):
    notrainer = _script("class_conditional/train_image_generation_notrainer.py", "class_conditional")
    trainer = _script("class_conditional/train_image_generation_trainer.py", "class_conditional")
    with pytest.raises(ValueError, match=r"--config_file '.*broken\.json' is not valid JSON"):
        notrainer.parse_args(["--config_file", bad_json])
    with pytest.raises(ValueError, match=r"--config_file '.*broken\.json' is not valid JSON"):
        trainer.parse_args(["--output_dir", str(tmp_path / "out"), "--max_steps", "10", "--config_file", bad_json])


def test_class_conditional_valid_arguments_parse(tmp_path):
    notrainer = _script("class_conditional/train_image_generation_notrainer.py", "class_conditional")
    trainer = _script("class_conditional/train_image_generation_trainer.py", "class_conditional")
    _, loop, _ = notrainer.parse_args([])  # defaults (config/DiT_XL_patch2.json)
    assert loop.ckpt_every == 50000 and loop.use_ema and loop.image_logging_steps <= 0
    notrainer.parse_args(["--config_file", "config/DiT_demo.json", "--max_steps", "1800", "--ckpt_every", "600", "--image_logging_steps", "0"])
    _, targs, _ = trainer.parse_args(["--output_dir", str(tmp_path / "a"), "--do_train", "--max_steps", "100", "--save_steps", "50", "--learning_rate", "1e-4"])
    assert targs.max_steps == 100 and targs.use_ema and targs.image_logging_steps <= 0  # the twins agree: EMA on, no grids
    # the SiT launchers' transport flags at their defaults are fine with a DiT config; LOSS_WEIGHT=None is None
    sit_defaults = ["--path_type", "Linear", "--prediction", "velocity", "--loss_weight", "None"]
    obj, _, _ = notrainer.parse_args(["--config_file", "config/DiT_demo.json", *sit_defaults])
    assert obj.loss_weight is None
    trainer.parse_args(["--output_dir", str(tmp_path / "c"), "--max_steps", "10", "--config_file", "config/DiT_demo.json", *sit_defaults])
    # with a SiT config they are read, and unknown values are named
    obj, _, _ = notrainer.parse_args(["--config_file", "config/SiT_demo.json", "--path_type", "GVP", "--prediction", "score", "--sampling_method", "heun"])
    assert (obj.path_type, obj.prediction, obj.sampling_method) == ("GVP", "score", "heun")
    with pytest.raises(ValueError, match="--path_type must be one of"):
        notrainer.parse_args(["--config_file", "config/SiT_demo.json", "--path_type", "Cosine"])
    with pytest.raises(ValueError, match=r"--sampling_method must be one of euler\|heun\|dopri5"):
        notrainer.parse_args(["--config_file", "config/SiT_demo.json", "--sampling_method", "sde"])
    _, targs, _ = trainer.parse_args(["--output_dir", str(tmp_path / "b"), "--do_train", "--num_train_epochs", "2"])  # epoch-based: paddlenlp's -1
    assert targs.max_steps == -1 and targs.num_train_epochs == 2


CC_EXTRACT_BAD = [
    (["--image_size", "30"], "--image_size must be a positive multiple of 4 (the downsampling factor of the VAE 'random' (autoencoder/config/vae_demo.json)), got 30"),
    (["--image_size", "0"], "--image_size must be a positive multiple of 4"),
    (["--batch_size", "0"], "--batch_size must be > 0, got 0"),
]


@pytest.mark.parametrize("argv,message", CC_EXTRACT_BAD, ids=[" ".join(a) for a, _ in CC_EXTRACT_BAD])
def test_class_conditional_extract_rejects(argv, message, capsys):
    extract = _script("class_conditional/extract_features.py", "class_conditional")
    assert message in _usage_error(extract.parse_args, ["--data_path", "d", "--feature_path", "f", "--vae_name_or_path", "random", *argv], capsys)


def test_extract_image_size_follows_the_vae(tmp_path, capsys):
    """An SD-style (4-level, f8) local VAE folder: 36 is a multiple of 4 but not of 8."""
    extract = _script("class_conditional/extract_features.py", "class_conditional")
    vae_dir = tmp_path / "sd_vae"
    vae_dir.mkdir()
    (vae_dir / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512],
                                                     "down_block_types": ["DownEncoderBlock2D"] * 4}))
    err = _usage_error(extract.parse_args, ["--data_path", "d", "--feature_path", "f", "--vae_name_or_path", str(vae_dir), "--image_size", "36"], capsys)
    assert "--image_size must be a positive multiple of 8" in err and "config.json" in err
    assert extract.parse_args(["--data_path", "d", "--feature_path", "f", "--vae_name_or_path", str(vae_dir), "--image_size", "256"]).image_size == 256
    assert extract.parse_args(["--data_path", "d", "--feature_path", "f", "--vae_name_or_path", "random", "--image_size", "32"]).image_size == 32


# ------------------------------------------------------------------------------- stable_diffusion
SD_BAD = [
    (["--resolution", "30"], "--resolution must be a positive multiple of 4 (the downsampling factor of the VAE 'random'"),
    (["--resolution", "36", "--vae_name_or_path", "CompVis/stable-diffusion-v1-4/vae"], "--resolution must be a positive multiple of 8"),
    (["--max_steps", "-3"], "--max_steps must be > 0 (or -1 with --do_train and --num_train_epochs > 0), got -3"),
    (["--learning_rate", "-1"], "--learning_rate must be > 0, got -1.0"),
    (["--text_encoder_learning_rate", "0"], "--text_encoder_learning_rate must be > 0, got 0.0"),
    (["--save_steps", "0"], "--save_steps must be > 0, got 0"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be > 0, got 0"),
    (["--num_inference_steps", "0"], "--num_inference_steps must be > 0, got 0"),
    (["--proportion_empty_prompts", "1.5"], "--proportion_empty_prompts must be in [0, 1], got 1.5"),
]


@pytest.mark.parametrize("argv,message", SD_BAD, ids=[" ".join(a) for a, _ in SD_BAD])
def test_stable_diffusion_rejects(argv, message, tmp_path):
    sd = _script("stable_diffusion/train_txt2img_laion400m_trainer.py", "stable_diffusion")
    base = {"--output_dir": str(tmp_path / "out"), "--max_steps": "10", "--resolution": "32", "--vae_name_or_path": "random"}
    base.update(dict(zip(argv[::2], argv[1::2])))
    with pytest.raises(ValueError) as e:
        sd.parse_args([x for kv in base.items() for x in kv])
    assert message in str(e.value)


def test_stable_diffusion_config_errors_name_the_file(bad_json, tmp_path):
    sd = _script("stable_diffusion/train_txt2img_laion400m_trainer.py", "stable_diffusion")
    with pytest.raises(ValueError, match=r"--unet_name_or_path '.*broken\.json' is not valid JSON: line 3 col 3"):
        sd.parse_args(["--output_dir", str(tmp_path / "out"), "--max_steps", "10", "--resolution", "32", "--vae_name_or_path", "random", "--unet_name_or_path", bad_json])
    with pytest.raises(ValueError, match=r"--unet_name_or_path '.*broken\.json' is not valid JSON"):
        sd.load_unet(bad_json)  # the loader itself names the file too


def test_stable_diffusion_valid_arguments_parse(tmp_path):
    sd = _script("stable_diffusion/train_txt2img_laion400m_trainer.py", "stable_diffusion")
    _, _, targs, _ = sd.parse_args(["--output_dir", str(tmp_path / "out"), "--max_steps", "10", "--resolution", "32", "--image_logging_steps", "0", "--vae_name_or_path", "random",
                                    "--unet_name_or_path", os.path.join(REPO_ROOT, "stable_diffusion", "config", "unet_demo.json")])
    assert targs.resolution == 32 and targs.max_steps == 10
    _, _, targs, _ = sd.parse_args(["--output_dir", str(tmp_path / "sd"), "--max_steps", "10", "--resolution", "512", "--vae_name_or_path", "CompVis/stable-diffusion-v1-4/vae"])
    assert targs.resolution == 512


# ------------------------------------------------------------------------------- ldm_uvit
UVIT_BASE = ["--do_train", "--unet_config_file", "config/uvit_t2i_demo.json", "--model_max_length", "8", "--max_steps", "10"]
UVIT_BAD = [
    (["--max_steps", "-3"], "--max_steps must be > 0 (or -1 with --do_train and --num_train_epochs > 0), got -3"),
    (["--learning_rate", "-1"], "--learning_rate must be > 0, got -1.0"),
    (["--save_steps", "0"], "--save_steps must be > 0, got 0"),
    (["--num_inference_steps", "0"], "--num_inference_steps must be > 0, got 0"),
    (["--p_uncond", "1.5"], "--p_uncond must be in [0, 1], got 1.5"),
    (["--image_logging_steps", "-1"], "--image_logging_steps must be >= 0, got -1"),
]


@pytest.mark.parametrize("argv,message", UVIT_BAD, ids=[" ".join(a) for a, _ in UVIT_BAD])
def test_ldm_uvit_rejects(argv, message, tmp_path):
    uvit = _script("ldm_uvit/train_txt2img_uvit_coco_trainer.py", "ldm_uvit")
    with pytest.raises(ValueError) as e:
        uvit.parse_args(["--output_dir", str(tmp_path / "out"), *UVIT_BASE, *argv])
    assert message in str(e.value)


def test_ldm_uvit_config_errors_name_the_file(bad_json, tmp_path):
    uvit = _script("ldm_uvit/train_txt2img_uvit_coco_trainer.py", "ldm_uvit")
    with pytest.raises(ValueError, match=r"--unet_config_file '.*broken\.json' is not valid JSON: line 3 col 3"):
        uvit.parse_args(["--output_dir", str(tmp_path / "out"), *UVIT_BASE, "--unet_config_file", bad_json])
    with pytest.raises(ValueError, match=r"--unet_config_file '.*broken\.json' is not valid JSON"):
        uvit.load_unet_config(bad_json)


def test_ldm_uvit_valid_arguments_parse(tmp_path):
    uvit = _script("ldm_uvit/train_txt2img_uvit_coco_trainer.py", "ldm_uvit")
    model_args, _, targs, _ = uvit.parse_args(["--output_dir", str(tmp_path / "out"), *UVIT_BASE, "--image_logging_steps", "0"])
    assert targs.max_steps == 10 and model_args.image_logging_steps == 0  # 0: never
    uvit.parse_args(["--output_dir", str(tmp_path / "x")])  # without --do_train: parsed, main() does nothing


UVIT_EXTRACT_BAD = [
    (["--resolution", "30"], "--resolution must be a positive multiple of 4"),
    (["--batch_size", "0"], "--batch_size must be > 0, got 0"),
    (["--model_max_length", "0"], "--model_max_length must be > 0, got 0"),
    (["--num_val_images", "-1"], "--num_val_images must be >= 0, got -1"),
]


@pytest.mark.parametrize("argv,message", UVIT_EXTRACT_BAD, ids=[" ".join(a) for a, _ in UVIT_EXTRACT_BAD])
def test_ldm_uvit_extract_rejects(argv, message, capsys):
    extract = _script("ldm_uvit/extract_features.py", "ldm_uvit")
    assert message in _usage_error(extract.parse_args, ["--vae_name_or_path", "random", *argv], capsys)


def test_ldm_uvit_extract_valid_arguments_parse():
    extract = _script("ldm_uvit/extract_features.py", "ldm_uvit")
    assert extract.parse_args(["--vae_name_or_path", "random", "--resolution", "32", "--model_max_length", "8"]).resolution == 32


# ------------------------------------------------------------------------------- create_pretraining_data
@pytest.mark.parametrize("argv,message", [(["--per_part_file_num", "0"], "--per_part_file_num must be > 0, got 0"),
                                          (["--num_repeat", "-2"], "--num_repeat must be > 0, got -2")])
def test_create_pretraining_data_rejects(argv, message, capsys):
    create = _script("stable_diffusion/create_pretraining_data.py")
    assert message in _usage_error(create.parse_args, ["--input_path", "x.jsonl", *argv], capsys)
    assert create.parse_args(["--input_path", "x.jsonl", "--num_repeat", "100"]).num_repeat == 100


# ------------------------------------------------------------------------------- ddpm compact Trainer
@pytest.mark.parametrize("argv,message", [
    (["--save_and_sample_every", "0"], "--save_and_sample_every must be > 0, got 0"),
    (["--train_num_steps", "-3"], "--train_num_steps must be > 0, got -3"),
    (["--train_lr", "-1"], "--train_lr must be > 0, got -1.0"),
    (["--sampling_timesteps", "2000"], "--sampling_timesteps must be"),
])
def test_trainer_style_refuses_bad_numbers(argv, message, capsys):
    script = _script("ddpm_tutorial/train_trainer_style.py", "ddpm_tutorial")
    assert message in _usage_error(script.parse_args, argv, capsys)
    assert script.parse_args([]).train_num_steps == 2000  # the defaults parse


def test_sd_text_encoder_config_errors_name_the_file_line_and_column(bad_json):
    """The demo text encoder's JSON config is read by the shared reader: a syntax error names the flag, file, line and column."""
    sd_dir = os.path.join(REPO_ROOT, "stable_diffusion")
    if sd_dir not in sys.path:
        sys.path.insert(0, sd_dir)
    from sd_text_encoder import build_text_encoder_from_config

    with pytest.raises(ValueError, match=r"--text_encoder_name_or_path '.*broken\.json' is not valid JSON: line 3 col 3"):
        build_text_encoder_from_config(bad_json, tokenizer=None)
    with pytest.raises(FileNotFoundError, match="--text_encoder_name_or_path 'missing.json' does not exist"):
        build_text_encoder_from_config("missing.json", tokenizer=None)
