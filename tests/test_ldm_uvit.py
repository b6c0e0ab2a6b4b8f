"""Tests of ldm_uvit/: feature layout, dataset draws, training (loss, resume, 2 processes),
pipeline export and sampling, launchers, and errors on bad input.

One short run of ``ldm_uvit/run_demo.sh`` (tiny knobs, into a tmp dir) is shared by several tests.
"""
import importlib.util
import json
import os
import re
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LDM_UVIT = os.path.join(REPO_ROOT, "ldm_uvit")


def launcher_default(launcher, knob):
    """The default of ``KNOB=${KNOB:-default}`` in ``ldm_uvit/<launcher>`` (the recipe under test)."""
    with open(os.path.join(LDM_UVIT, launcher)) as f:
        m = re.search(rf"^{knob}=\$\{{{knob}:-([^}}]*)\}}", f.read(), re.M)
    assert m, f"{launcher} has no {knob} knob"
    return m.group(1)


DEMO_PREDICTION_TYPE = launcher_default("run_demo.sh", "PREDICTION_TYPE")
DEMO_STEPS, DEMO_SAVE, RESUME_STEPS = 20, 10, 12
DEMO_ENV = {
    "NPROC": "1",
    "MAX_IMAGES": "120",
    "NUM_VAL_IMAGES": "12",
    "VAE": "random",
    "BATCH_SIZE": "32",
    "MAX_STEPS": str(DEMO_STEPS),
    "LEARNING_RATE": "0.001",
    "WARMUP_STEPS": "3",
    "SAVE_STEPS": str(DEMO_SAVE),
    "LOGGING_STEPS": "5",
    "IMAGE_LOGGING_STEPS": str(DEMO_SAVE),
    "NUM_INFERENCE_STEPS": "2",
    "NUM_IMAGES_PER_PROMPT": "1",
    "SAMPLES_PER_CLASS": "1",
}


@pytest.fixture(scope="module")
def uvit():
    """ldm_uvit's modules; its folder is on sys.path only while importing (its scripts have generic names)."""
    saved = list(sys.path)
    sys.path.insert(0, LDM_UVIT)
    try:
        import uvit_diffusion
        import uvit_features
        import uvit_trainer

        spec = importlib.util.spec_from_file_location("ldm_uvit_generate_pipelines", os.path.join(LDM_UVIT, "generate_pipelines.py"))
        generate = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(generate)
    finally:
        sys.path[:] = saved
    return SimpleNamespace(diffusion=uvit_diffusion, features=uvit_features, trainer=uvit_trainer, generate=generate)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, demo_root):
    """Run ldm_uvit/run_demo.sh with tiny knobs; returns (features dir, output dir)."""
    from conftest import _run

    tmp = tmp_path_factory.mktemp("ldm_uvit_demo")
    env = dict(DEMO_ENV, FEATURE_PATH=str(tmp / "features"), OUTPUT_DIR=str(tmp / "run"))
    env["PPDIFFUSERS_MODULES_CACHE"] = str(tmp / "modules_cache")
    _run(["sh", os.path.join(LDM_UVIT, "run_demo.sh")], REPO_ROOT, 600, env, check=True)
    return tmp / "features", tmp / "run"


def _write_split(root, n_images, n_captions, moments_shape=(8, 8, 8), context_shape=(16, 64)):
    """Synthetic feature folder: caption k of image i is filled with i * 10 + k + 1; empty context with 0."""
    os.makedirs(root / "train")
    for i in range(n_images):
        np.save(root / "train" / f"{i}.npy", np.full(moments_shape, i, np.float32))
        for k in range(n_captions):
            np.save(root / "train" / f"{i}_{k}.npy", np.full(context_shape, i * 10 + k + 1, np.float32))
    np.save(root / "empty_context.npy", np.zeros(context_shape, np.float32))
    return root


def test_extract_features_layout(demo_run, uvit):
    features, _ = demo_run
    scan_feature_split = uvit.features.scan_feature_split

    meta = json.loads((features / "meta.json").read_text())
    n_train = int(DEMO_ENV["MAX_IMAGES"]) - int(DEMO_ENV["NUM_VAL_IMAGES"])
    assert scan_feature_split(str(features / "train")) == [2] * n_train  # 2 captions per digit image
    assert scan_feature_split(str(features / "val")) == [2] * int(DEMO_ENV["NUM_VAL_IMAGES"])
    assert np.load(features / "train" / "0.npy").shape == (8, 8, 8)  # f4 VAE: 32x32 -> (2*4, 8, 8) moments
    assert np.load(features / "train" / "0_1.npy").shape == (8, 64)  # model_max_length 8 (the demo's longest caption)
    assert np.load(features / "empty_context.npy").shape == (8, 64)
    assert meta["moments_shape"] == [8, 8, 8] and meta["splits"]["train"] == {"images": n_train, "captions": 2 * n_train}
    # the two captions of an image differ, and both differ from the empty caption
    c0, c1, empty = (np.load(features / "train" / f) for f in ("0_0.npy", "0_1.npy", "../empty_context.npy"))
    assert not np.allclose(c0, c1) and not np.allclose(c0, empty)
    prompts = (features / "run_vis" / "prompts.txt").read_text().splitlines()
    assert len(prompts) == len([f for f in os.listdir(features / "run_vis") if f.endswith(".npy")]) > 0


def test_dataset_draws_captions_and_uncond_at_rate(tmp_path, uvit):
    CocoFeatureDataset = uvit.features.CocoFeatureDataset

    root = _write_split(tmp_path, n_images=40, n_captions=3)
    ds = CocoFeatureDataset(str(root), p_uncond=0.25, seed=7, moments_shape=(8, 8, 8), context_shape=(16, 64))
    counts, uncond, total = np.zeros(3), 0, 0
    for epoch in range(10):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            sample = ds[i]
            assert sample["moments"][0, 0, 0] == i
            value = sample["context"][0, 0]
            if value == 0:
                uncond += 1
            else:
                assert int(value) // 10 == i  # a caption of this image
                counts[int(value) % 10 - 1] += 1
            total += 1
    assert abs(uncond / total - 0.25) < 0.06  # 400 draws: std 0.022
    assert np.all(np.abs(counts / counts.sum() - 1 / 3) < 0.08)
    # draws are a pure function of (seed, epoch, index) and change with the epoch
    ds.set_epoch(3)
    assert [ds.draw(i) for i in range(len(ds))] == [ds.draw(i) for i in range(len(ds))]
    ds.set_epoch(4)
    first = [ds.draw(i) for i in range(len(ds))]
    ds.set_epoch(5)
    assert first != [ds.draw(i) for i in range(len(ds))]
    assert all(not CocoFeatureDataset(str(root), p_uncond=0.0, seed=1).draw(i)[1] for i in range(len(ds)))


def test_bad_features_give_clear_errors(tmp_path, uvit):
    CocoFeatureDataset = uvit.features.CocoFeatureDataset

    root = _write_split(tmp_path / "a", n_images=3, n_captions=2)
    os.remove(root / "empty_context.npy")
    with pytest.raises(FileNotFoundError, match="empty_context.npy"):
        CocoFeatureDataset(str(root))

    root = _write_split(tmp_path / "b", n_images=3, n_captions=2, moments_shape=(8, 16, 16))
    with pytest.raises(ValueError, match=r"0\.npy.*\(8, 16, 16\).*\(8, 8, 8\)"):
        CocoFeatureDataset(str(root), moments_shape=(8, 8, 8), context_shape=(16, 64))

    root = _write_split(tmp_path / "c", n_images=3, n_captions=2)
    np.save(root / "train" / "2.npy", np.zeros((4, 8, 8), np.float32))  # later file: caught when loaded
    ds = CocoFeatureDataset(str(root), moments_shape=(8, 8, 8), context_shape=(16, 64))
    with pytest.raises(ValueError, match=r"2\.npy"):
        ds.load_sample(2)
    assert ds[2]["moments"][0, 0, 0] == 0 and ds.num_skipped == 1  # ds[i] skips it (tests/test_readers.py)

    root = _write_split(tmp_path / "d", n_images=3, n_captions=2)
    with pytest.raises(ValueError, match="expected \\(16, 32\\)"):
        CocoFeatureDataset(str(root), context_shape=(16, 32))

    root = _write_split(tmp_path / "e", n_images=3, n_captions=2)
    os.remove(root / "train" / "1_0.npy")
    os.remove(root / "train" / "1_1.npy")
    with pytest.raises(ValueError, match="image 1 .*no caption"):
        CocoFeatureDataset(str(root))

    with pytest.raises(FileNotFoundError, match="train"):
        CocoFeatureDataset(str(tmp_path / "missing"))


def test_demo_writes_its_outputs(demo_run):
    """run_demo.sh end to end (tiny knobs; that the recipe learns is test_wrong_caption_raises_the_denoising_error)."""
    _, run = demo_run
    state = json.loads((run / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert state["global_step"] == DEMO_STEPS and len(losses) == DEMO_STEPS // int(DEMO_ENV["LOGGING_STEPS"])
    assert all(np.isfinite(losses)), losses
    assert json.loads((run / "ldm_uvit_args.json").read_text())["prediction_type"] == DEMO_PREDICTION_TYPE
    assert "digit accuracy" in (run / "digit_score.txt").read_text()  # the judge ran on the exported pipeline
    for name in ("model_state.pdparams", "ema_state.pdparams", "unet_config.json", "ldm_uvit_args.json", "prompt_grid.png", "digit_score.txt"):
        assert (run / name).is_file(), name
    assert (run / "samples" / f"step-{DEMO_SAVE}.png").is_file()  # the shared ImageLoggingCallback's place
    index = json.loads((run / "ldm_uvit_pipelines" / "model_index.json").read_text())
    assert index["_class_name"] == "LDMTextToImagePipeline"
    assert {"vqvae", "bert", "unet", "scheduler", "tokenizer"} <= set(index)
    assert index["scheduler"][1] == "DDIMScheduler"
    scheduler = json.loads((run / "ldm_uvit_pipelines" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == DEMO_PREDICTION_TYPE  # the pipeline steps with what the U-ViT predicts


def test_pipeline_from_pretrained_samples(demo_run, monkeypatch, tmp_path):
    features, run = demo_run
    monkeypatch.setenv("PPDIFFUSERS_MODULES_CACHE", str(tmp_path / "modules"))
    import paddle
    from ppdiffusers import LDMTextToImagePipeline

    pipe = LDMTextToImagePipeline.from_pretrained(str(run / "ldm_uvit_pipelines"))
    images = pipe(["a handwritten digit one", "the number 7 written by hand"], height=64, width=64,
                  num_inference_steps=2, guidance_scale=2.0, generator=paddle.Generator().manual_seed(0)).images
    assert len(images) == 2 and images[0].size == (32, 32)  # height // 8 = 8x8 latents through the f4 VAE
    # the pipeline's text features are exactly the extracted training features
    captions = [json.loads(line) for line in (features / "train_captions.jsonl").read_text().splitlines()]
    ids = pipe.tokenizer([captions[0]["captions"][1]], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pd").input_ids
    np.testing.assert_allclose(pipe.bert(ids)[0][0].numpy(), np.load(features / "train" / "0_1.npy"), atol=1e-5)


def test_pipeline_default_call(demo_run, monkeypatch, tmp_path):
    """The standard call without height/width: the export's unet config makes the pipeline's
    default height (sample_size * vae_scale_factor) give height // 8 = the U-ViT's latents, also
    with the f4 demo VAE; with guidance, and deterministic for a seeded generator."""
    _, run = demo_run
    monkeypatch.setenv("PPDIFFUSERS_MODULES_CACHE", str(tmp_path / "modules"))
    import paddle
    from ppdiffusers import LDMTextToImagePipeline

    pipe = LDMTextToImagePipeline.from_pretrained(str(run / "ldm_uvit_pipelines"))
    assert pipe.vae_scale_factor == 4  # the demo VAE (random here, same config)
    config = pipe.unet.config
    assert config.latent_size == 8 and config.sample_size * pipe.vae_scale_factor // 8 == config.latent_size
    image = pipe("a handwritten digit three", num_inference_steps=2).images[0]
    assert image.size == (32, 32)  # 8x8 latents through the f4 VAE
    guided = [pipe("a handwritten digit three", num_inference_steps=2, guidance_scale=4.0,
                   generator=paddle.Generator().manual_seed(3), output_type="np").images for _ in range(2)]
    assert guided[0].shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(guided[0], guided[1])
    # a height that gives other latents is refused, naming the size that works
    with pytest.raises(ValueError, match="height = width = 64"):
        pipe("a handwritten digit three", height=32, width=32, num_inference_steps=1)


def test_export_unet_config_sizes(uvit):
    """export_unet_config: sample_size = latent_size * 8 / vae_scale_factor, latent side kept."""
    export = uvit.generate.export_unet_config
    assert export({"sample_size": 8, "clip_dim": 64}, 4) == {"sample_size": 16, "latent_size": 8, "clip_dim": 64}
    assert export({"sample_size": 32}, 8) == {"sample_size": 32, "latent_size": 32}  # SD VAE: unchanged
    assert export({"sample_size": 32}, 16) == {"sample_size": 16, "latent_size": 32}
    assert export({"sample_size": 3}, 16) == {"sample_size": 3, "latent_size": 3}  # no default height fits: warned, unchanged
    assert export({"sample_size": 16, "latent_size": 8}, 4) == {"sample_size": 16, "latent_size": 8}


# ---------------------------------------------------------------- conditioning: does the caption matter?
TINY_UVIT = dict(_class_name="UViTT2IModel", sample_size=8, in_channels=4, out_channels=4, patch_size=2, num_layers=4, num_attention_heads=2,
                 attention_head_dim=32, mlp_ratio=2.0, qkv_bias=False, qk_scale=None, norm_type="layer_norm", clip_dim=64, num_text_tokens=8, conv=True)
GAP_STEPS, GAP_IMAGES_PER_DIGIT = 100, 2  # every step sees all 20 images (batch 20)
# measured with this setup: the demo recipe (v-prediction) +4.2% at step 100 (+4.2% / +5.4% at step 120 with seeds
# 1234 / 7); noise prediction +0.13% at step 120, and the demo's recipe before v-prediction and the U-ViT init of the
# convolutions +0.14%
GAP_THRESHOLD = 0.02


def random_vae_scale():
    """``scaling_factor`` of ``--vae_name_or_path random`` (common.vae's demo VAE config)."""
    from common.vae import DEMO_VAE_CONFIG

    with open(DEMO_VAE_CONFIG) as f:
        return float(json.load(f)["scaling_factor"])


def write_digit_features(root, digits_dir, images_per_digit, scale_factor, seed=0):
    """A feature folder (COCO-256 layout) whose latents are the digits themselves and whose
    captions are class embeddings, so that conditioning can be learned within a test's budget.

    Latent of a digit: its 8x8 grayscale image, standardised, as 4 channels ``(g, -g, g, -g)``,
    divided by ``scale_factor`` (training multiplies by it) and with logvar -20 (no posterior
    noise).  Both captions of digit ``d``: one N(0, 1) vector of 64 numbers on all 8 tokens
    (``emb[d]``, like a class embedding); the empty caption is zeros.  Returns ``(root, labels)``
    with the digit of every image.
    """
    from PIL import Image

    emb = np.random.default_rng(seed).standard_normal((10, 1, 64)).astype(np.float32)
    os.makedirs(root / "train")
    labels = []
    for d in range(10):
        for name in sorted(os.listdir(os.path.join(digits_dir, str(d))))[:images_per_digit]:
            g = np.asarray(Image.open(os.path.join(digits_dir, str(d), name)).convert("L").resize((8, 8), Image.BOX), np.float32) / 255.0
            g = (g - g.mean()) / (g.std() + 1e-6)
            mean = np.stack([g, -g, g, -g]) / scale_factor
            i = len(labels)
            np.save(root / "train" / f"{i}.npy", np.concatenate([mean, np.full_like(mean, -20.0)]).astype(np.float32))
            for k in range(2):
                np.save(root / "train" / f"{i}_{k}.npy", np.repeat(emb[d], 8, axis=0))
            labels.append(d)
    np.save(root / "empty_context.npy", np.zeros((8, 64), np.float32))
    return root, labels


def caption_gap(uvit, run_dir, features, labels, repeats=8, seed=0):
    """Relative increase of the denoising error (the run's own training target, t in [300, 1000))
    when every training image gets the caption of another digit instead of its own; the same
    noise and timesteps for both."""
    import paddle

    args = json.loads((run_dir / "ldm_uvit_args.json").read_text())
    config = uvit.trainer.load_unet_config(str(run_dir / "unet_config.json"))
    unet = uvit.generate.load_unet(str(run_dir / "model_state.pdparams"), config, use_ema=False)
    diffusion = uvit.diffusion.NoisePredictionDiffusion(uvit.diffusion.make_ddpm_scheduler(args.get("prediction_type", "epsilon")))
    rng = np.random.default_rng(seed)
    n = len(labels)
    idx = np.tile(np.arange(n), repeats)
    wrong_image = [int(rng.choice([j for j in range(n) if labels[j] != labels[i]])) for i in idx]
    moments = np.stack([np.load(features / "train" / f"{i}.npy") for i in range(n)])
    x0 = paddle.to_tensor(moments[idx, :4] * random_vae_scale())  # the latents training sees
    right = paddle.to_tensor(np.stack([np.load(features / "train" / f"{i}_0.npy") for i in idx]))
    wrong = paddle.to_tensor(np.stack([np.load(features / "train" / f"{j}_0.npy") for j in wrong_image]))
    t = paddle.to_tensor(rng.integers(300, 1000, len(idx)), dtype="int64")
    noise = paddle.to_tensor(rng.standard_normal(x0.shape).astype(np.float32))
    x_t = diffusion.scheduler.add_noise(x0, noise, t)
    target = diffusion.target(x0, noise, t)
    with paddle.no_grad():
        err = [float((unet(x_t, t, c).sample - target).square().mean()) for c in (right, wrong)]
    return err[1] / err[0] - 1.0


def test_wrong_caption_raises_the_denoising_error(tmp_path, run_script, uvit, demo_root):
    """A short run with the demo's recipe (run_demo.sh's objective, learning rate and warmup) lowers
    its loss and learns to use its captions: the wrong caption raises the denoising error by more
    than GAP_THRESHOLD.
    With U-ViT's noise prediction the same run stays below it (the demo's old recipe, measured
    with this code: README "The demo")."""
    features, labels = write_digit_features(tmp_path / "features", os.path.join(demo_root, "digits"), GAP_IMAGES_PER_DIGIT, random_vae_scale())
    config = tmp_path / "tiny_uvit.json"
    config.write_text(json.dumps(TINY_UVIT))
    out = tmp_path / "run"
    run_script(
        "ldm_uvit/train_txt2img_uvit_coco_trainer.py", "--do_train", "--output_dir", out, "--feature_path", features,
        "--unet_config_file", config, "--vae_name_or_path", "random", "--model_max_length", "8",
        "--prediction_type", DEMO_PREDICTION_TYPE, "--learning_rate", launcher_default("run_demo.sh", "LEARNING_RATE"),
        "--warmup_steps", launcher_default("run_demo.sh", "WARMUP_STEPS"), "--lr_scheduler_type", "constant_with_warmup",
        "--weight_decay", "0.03", "--adam_beta1", "0.9", "--adam_beta2", "0.9", "--max_grad_norm", "-1",
        "--per_device_train_batch_size", 10 * GAP_IMAGES_PER_DIGIT, "--max_steps", GAP_STEPS, "--save_steps", GAP_STEPS, "--logging_steps", 10,
        "--image_logging_steps", 0, "--use_ema", "False", "--seed", 1234, "--dataloader_num_workers", 0, "--disable_tqdm", "True",
        env={"OMP_NUM_THREADS": "1"}, timeout=600,
    )
    losses = [h["loss"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert losses[-1] < 0.8 * losses[0], losses
    gap = caption_gap(uvit, out, features, labels)
    assert gap > GAP_THRESHOLD, f"a wrong caption raises the denoising error by only {100 * gap:.2f}% after {GAP_STEPS} steps"


def test_launcher_resumes_ema_and_step(demo_run, run_shell, tmp_path):
    """run_train_ldm_uvit_small_deep.sh (tiny overrides, recompute on) resumes a demo checkpoint."""
    import paddle

    features, run = demo_run
    out = tmp_path / "resumed"
    os.makedirs(out)
    shutil.copytree(run / f"checkpoint-{DEMO_SAVE}", out / f"checkpoint-{DEMO_SAVE}")
    env = {
        "FEATURE_PATH": str(features), "OUTPUT_DIR": str(out), "UNET_CONFIG": "config/uvit_t2i_demo.json", "VAE": "random",
        "MODEL_MAX_LENGTH": "8", "BATCH_SIZE": "8", "NUM_WORKERS": "0", "MAX_STEPS": str(RESUME_STEPS), "NPROC": "1",
        "SAVE_STEPS": str(RESUME_STEPS), "WARMUP_STEPS": "2", "IMAGE_LOGGING_STEPS": "0", "LOGGING_STEPS": "1",
    }
    # the demo checkpoint was trained with v-prediction (run_demo.sh); the resumed run must keep its objective
    proc = run_shell("ldm_uvit/run_train_ldm_uvit_small_deep.sh", "--resume_from_checkpoint", "latest",
                     "--prediction_type", DEMO_PREDICTION_TYPE, env=env, timeout=300)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == RESUME_STEPS
    logged = [h["step"] for h in state["log_history"] if "loss" in h]  # the checkpoint's history, then the new steps
    assert logged == list(range(5, DEMO_SAVE + 1, 5)) + list(range(DEMO_SAVE + 1, RESUME_STEPS + 1))  # continued, not restarted
    before = paddle.load(str(run / f"checkpoint-{DEMO_SAVE}" / "ema_state.pdparams"))
    after = paddle.load(str(out / f"checkpoint-{RESUME_STEPS}" / "ema_state.pdparams"))
    assert before["optimization_step"] == DEMO_SAVE and after["optimization_step"] == RESUME_STEPS  # EMA restored, then stepped
    assert any(not np.allclose(np.asarray(a), np.asarray(b)) for a, b in zip(before["shadow_params"], after["shadow_params"]))
    log = proc.stdout + proc.stderr  # NPROC=1: a plain `python` process
    assert "resuming from" in log and "recompute not supported" not in log


def test_two_process_training(demo_run, launch_2proc, tmp_path):
    features, _ = demo_run
    out = tmp_path / "ddp"
    result = launch_2proc(
        "ldm_uvit/train_txt2img_uvit_coco_trainer.py", "--do_train", "--output_dir", out, "--feature_path", features,
        "--unet_config_file", "config/uvit_t2i_demo.json", "--vae_name_or_path", "random", "--model_max_length", "8",
        "--per_device_train_batch_size", "4", "--max_steps", "2", "--save_steps", "2", "--logging_steps", "1",
        "--image_logging_steps", "0", "--disable_tqdm", "True",
        env={"OMP_NUM_THREADS": "1"}, timeout=300,
    )
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (out / "model_state.pdparams").is_file() and (out / "checkpoint-2" / "ema_state.pdparams").is_file()
    _, log_dir = result
    logs = [(log_dir / f"workerlog.{r}").read_text() for r in (0, 1)]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in logs[0]  # 2 ranks x 4
    assert all("Running training" in log for log in logs)


def test_export_rejects_weights_of_another_config(demo_run, uvit):
    _, run = demo_run
    load_unet, load_unet_config = uvit.generate.load_unet, uvit.trainer.load_unet_config

    config = load_unet_config(str(run / "unet_config.json"))
    unet = load_unet(str(run / "model_state.pdparams"), config, use_ema=True)  # the right config loads (EMA weights)
    assert unet.config.num_layers == config["num_layers"]
    with pytest.raises(ValueError, match="does not match the U-ViT config"):
        load_unet(str(run / "model_state.pdparams"), dict(config, num_layers=config["num_layers"] - 2), use_ema=True)
