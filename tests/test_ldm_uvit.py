"""Tests of ldm_uvit/: feature layout, dataset draws, training (loss, resume, 2 processes),
pipeline export and sampling, launchers, and errors on bad input.

One short run of ``ldm_uvit/run_demo.sh`` (tiny knobs, into a tmp dir) is shared by several tests.
"""
import importlib.util
import json
import os
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LDM_UVIT = os.path.join(REPO_ROOT, "ldm_uvit")

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
}


@pytest.fixture(scope="module")
def uvit():
    """ldm_uvit's modules; its folder is on sys.path only while importing (its scripts have generic names)."""
    saved = list(sys.path)
    sys.path.insert(0, LDM_UVIT)
    try:
        import uvit_features
        import uvit_trainer

        spec = importlib.util.spec_from_file_location("ldm_uvit_generate_pipelines", os.path.join(LDM_UVIT, "generate_pipelines.py"))
        generate = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(generate)
    finally:
        sys.path[:] = saved
    return SimpleNamespace(features=uvit_features, trainer=uvit_trainer, generate=generate)


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


def test_demo_loss_falls_and_outputs(demo_run):
    _, run = demo_run
    state = json.loads((run / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert state["global_step"] == DEMO_STEPS and len(losses) >= 4
    assert losses[-1] < 0.8 * losses[0], losses
    for name in ("model_state.pdparams", "ema_state.pdparams", "unet_config.json", "ldm_uvit_args.json", "prompt_grid.png"):
        assert (run / name).is_file(), name
    assert (run / "image_logs" / f"step-{DEMO_SAVE}.png").is_file()
    index = json.loads((run / "ldm_uvit_pipelines" / "model_index.json").read_text())
    assert index["_class_name"] == "LDMTextToImagePipeline"
    assert {"vqvae", "bert", "unet", "scheduler", "tokenizer"} <= set(index)
    assert index["scheduler"][1] == "DDIMScheduler"


def test_pipeline_from_pretrained_samples(demo_run, monkeypatch, tmp_path):
    features, run = demo_run
    monkeypatch.setenv("PPDIFFUSERS_MODULES_CACHE", str(tmp_path / "modules"))
    import paddle
    from ppdiffusers import LDMTextToImagePipeline

    pipe = LDMTextToImagePipeline.from_pretrained(str(run / "ldm_uvit_pipelines"))
    side = pipe.unet.config.sample_size * 8  # the pipeline makes height // 8 latents
    images = pipe(["a handwritten digit one", "the number 7 written by hand"], height=side, width=side,
                  num_inference_steps=2, guidance_scale=2.0, generator=paddle.Generator().manual_seed(0)).images
    assert len(images) == 2 and images[0].size == (32, 32)  # 8x8 latents through the f4 VAE
    # the pipeline's text features are exactly the extracted training features
    captions = [json.loads(line) for line in (features / "train_captions.jsonl").read_text().splitlines()]
    ids = pipe.tokenizer([captions[0]["captions"][1]], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pd").input_ids
    np.testing.assert_allclose(pipe.bert(ids)[0][0].numpy(), np.load(features / "train" / "0_1.npy"), atol=1e-5)


def test_launcher_resumes_ema_and_step(demo_run, run_shell, tmp_path):
    """run_train_ldm_uvit_small_deep.sh (tiny overrides, recompute on) resumes a demo checkpoint."""
    import paddle

    features, run = demo_run
    out = tmp_path / "resumed"
    os.makedirs(out)
    shutil.copytree(run / f"checkpoint-{DEMO_SAVE}", out / f"checkpoint-{DEMO_SAVE}")
    env = {
        "FEATURE_PATH": str(features), "OUTPUT_DIR": str(out), "UNET_CONFIG": "config/uvit_t2i_demo.json", "VAE": "random",
        "MODEL_MAX_LENGTH": "8", "PER_DEVICE_TRAIN_BATCH_SIZE": "8", "DATALOADER_NUM_WORKERS": "0", "MAX_STEPS": str(RESUME_STEPS),
        "SAVE_STEPS": str(RESUME_STEPS), "WARMUP_STEPS": "2", "IMAGE_LOGGING_STEPS": "0", "LOGGING_STEPS": "1",
    }
    run_shell("ldm_uvit/run_train_ldm_uvit_small_deep.sh", "--resume_from_checkpoint", "latest", env=env, timeout=300)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == RESUME_STEPS
    logged = [h["step"] for h in state["log_history"] if "loss" in h]  # the checkpoint's history, then the new steps
    assert logged == list(range(5, DEMO_SAVE + 1, 5)) + list(range(DEMO_SAVE + 1, RESUME_STEPS + 1))  # continued, not restarted
    before = paddle.load(str(run / f"checkpoint-{DEMO_SAVE}" / "ema_state.pdparams"))
    after = paddle.load(str(out / f"checkpoint-{RESUME_STEPS}" / "ema_state.pdparams"))
    assert before["optimization_step"] == DEMO_SAVE and after["optimization_step"] == RESUME_STEPS  # EMA restored, then stepped
    assert any(not np.allclose(np.asarray(a), np.asarray(b)) for a, b in zip(before["shadow_params"], after["shadow_params"]))
    log = (out / "launch_logs" / "workerlog.0").read_text()
    assert "resuming from" in log and "recompute not supported" not in log


def test_two_process_training(demo_run, launch_2proc, tmp_path):
    features, _ = demo_run
    out = tmp_path / "ddp"
    result = launch_2proc(
        "ldm_uvit/train_txt2img_uvit_coco_trainer.py", "--do_train", "--output_dir", out, "--feature_path", features,
        "--unet_config_file", "config/uvit_t2i_demo.json", "--vae_name_or_path", "random", "--model_max_length", "8",
        "--per_device_train_batch_size", "4", "--max_steps", "2", "--save_steps", "2", "--logging_steps", "1",
        "--image_logging_steps", "0", "--disable_tqdm", "True", "--overwrite_output_dir",
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
