"""A resumed laion stream seeks by step: it passes over the consumed records without decoding them
and then yields exactly what the uninterrupted stream yields (issue 13, item 11)."""
import os

import numpy as np
import pytest

from common.laion import LaionDataset


class _Process:
    """Records how often it runs; its random draw comes from the sample's own index."""

    def __init__(self):
        self.calls = 0

    def __call__(self, image, caption, sample_index=None):
        self.calls += 1
        rng = np.random.default_rng([7, sample_index])
        return {"caption": caption, "pixels": np.asarray(image)[::4, ::4, 0].copy(), "draw": rng.random()}


def _digits_list(demo_root):
    return os.path.join(demo_root, "laion_digits", "filelist", "digits.filelist.list")


def _take(dataset, n):
    it = iter(dataset)
    return [next(it) for _ in range(n)]


def _same(a, b):
    return a["caption"] == b["caption"] and np.array_equal(a["pixels"], b["pixels"]) and a["draw"] == b["draw"]


def test_resumed_stream_skips_without_decoding_and_continues_exactly(demo_root, monkeypatch):
    import common.laion as laion

    full = _take(LaionDataset(_digits_list(demo_root), process_fn=_Process(), buffer_size=16, seed=3), 40)

    decodes = []
    real_decode = laion.decode_image_b64
    monkeypatch.setattr(laion, "decode_image_b64", lambda text: decodes.append(1) or real_decode(text))
    proc = _Process()
    resumed = LaionDataset(_digits_list(demo_root), process_fn=proc, buffer_size=16, seed=3)
    resumed.resume_at(batches_per_rank=6, batch_size=4)  # 24 samples consumed by one reader
    tail = _take(resumed, 16)
    assert all(_same(a, b) for a, b in zip(tail, full[24:])), "the resumed stream differs from the uninterrupted one"
    assert proc.calls == 16 and len(decodes) == 16, f"consumed records were decoded: {len(decodes)} decodes for 16 samples"


def test_resume_with_two_loader_workers_continues_each_workers_share(demo_root):
    """paddle's DataLoader takes batch b from worker b % num_workers; each worker skips its share."""
    import paddle

    def batches(dataset, n):
        loader = paddle.io.DataLoader(dataset, batch_size=4, num_workers=2, drop_last=True,  # the loader moves arrays only
                                      collate_fn=lambda samples: (np.stack([s["pixels"] for s in samples]), np.array([s["draw"] for s in samples])))
        it = iter(loader)
        out = [tuple(t.numpy().tolist() for t in next(it)) for _ in range(n)]
        del it
        return out

    full = batches(LaionDataset(_digits_list(demo_root), process_fn=_Process(), buffer_size=8, seed=5), 9)
    resumed_ds = LaionDataset(_digits_list(demo_root), process_fn=_Process(), buffer_size=8, seed=5)
    resumed_ds.resume_at(batches_per_rank=5, batch_size=4)
    assert batches(resumed_ds, 4) == full[5:9]


def _sd_losses(run_dir):
    import json

    with open(os.path.join(run_dir, "train_log.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def test_sd_trainer_resume_on_the_laion_stream_is_exact_and_seeks(demo_root, run_script, tmp_path):
    """The Stable Diffusion Trainer resumed mid-stream (one loader worker) logs the same losses as
    the uninterrupted run, and the reader seeks instead of decoding the consumed batches."""
    script = os.path.join("stable_diffusion", "train_txt2img_laion400m_trainer.py")
    common = ["--do_train", "--file_list", _digits_list(demo_root), "--vae_name_or_path", "random", "--resolution", 32,
              "--model_max_length", 8, "--per_device_train_batch_size", 4, "--learning_rate", "1e-3",
              "--lr_scheduler_type", "constant", "--train_text_encoder", "True", "--use_ema", "False",
              "--logging_steps", 1, "--save_steps", 3, "--image_logging_steps", 0, "--dataloader_num_workers", 1,
              "--seed", 11, "--disable_tqdm", "True", "--num_inference_steps", 2]
    full, part = tmp_path / "full", tmp_path / "part"
    run_script(script, "--output_dir", full, "--max_steps", 6, *common, timeout=300)
    run_script(script, "--output_dir", part, "--max_steps", 3, *common, timeout=300)
    resumed = run_script(script, "--output_dir", part, "--max_steps", 6, "--resume_from_checkpoint", "latest",
                         "--tokenizer_name", part / "tokenizer", *common, timeout=300)
    a, b = _sd_losses(full), _sd_losses(part)
    assert sorted(b) == [1, 2, 3, 4, 5, 6], b
    assert [b[s] for s in (4, 5, 6)] == [a[s] for s in (4, 5, 6)], (a, b)
    assert "skipped without decoding" in resumed.stdout + resumed.stderr


def test_vae_two_process_resume_on_the_laion_stream_continues_exactly(launch_2proc, tmp_path):
    """train_vae.py on laion parts, 2 processes with a loader worker each: stopped at step 2 and
    resumed, it ends with the weights of the uninterrupted 4-step run on both ranks (the stream
    seeks per rank and worker; each rank restores its own RNG)."""
    import shutil

    from conftest import rank_checksums

    file_list = os.path.join(os.path.dirname(__file__), "..", "autoencoder", "data", "filelist", "demo_train.filelist.list")
    common = ["--from_scratch", "--vae_config_file", os.path.join(os.path.dirname(__file__), "..", "autoencoder", "config", "vae_demo.json"),
              "--dataset_type", "text_image_pair", "--file_list", file_list, "--resolution", 32, "--batch_size", 2,
              "--num_workers", 1, "--logging_steps", 1, "--image_logging_steps", 100, "--save_steps", 2,
              "--perceptual_weight", 0, "--disc_start", 1]
    full, part = tmp_path / "full", tmp_path / "part"
    _, full_logs = launch_2proc("autoencoder/train_vae.py", *common, "--max_train_steps", 4, "--output_dir", full, timeout=400)
    full_sums = rank_checksums(full_logs)
    shutil.rmtree(full_logs)
    launch_2proc("autoencoder/train_vae.py", *common, "--max_train_steps", 2, "--output_dir", part, timeout=400)
    _, logs = launch_2proc("autoencoder/train_vae.py", *common, "--max_train_steps", 4, "--output_dir", part,
                           "--resume_from_checkpoint", "latest", timeout=400)
    sums = rank_checksums(logs)
    assert sums[0] == pytest.approx(sums[1], rel=1e-7)
    assert sums[0] == pytest.approx(full_sums[0], rel=1e-6), (sums, full_sums)
    assert "skipped without decoding" in "".join(p.read_text() for p in logs.glob("workerlog.*"))
