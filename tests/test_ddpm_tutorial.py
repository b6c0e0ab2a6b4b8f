"""ddpm_tutorial/: both training styles on the bundled faces, checkpoints, resume, pipeline, launch."""
import os
import shutil
import sys

import numpy as np
import paddle
import pytest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO_ROOT, "ddpm_tutorial"))

import train_unconditional  # noqa: E402
from denoising_diffusion import GaussianDiffusion, Trainer, Unet  # noqa: E402

# a tiny UNet so each step takes well under a second on 2 cores
TINY = ["--resolution", "16", "--block_out_channels", "16", "32", "--attention_levels", "1", "--layers_per_block", "1", "--train_batch_size", "8"]


def _train(demo_root, out, *extra):
    argv = ["--train_data_dir", os.path.join(demo_root, "faces"), "--output_dir", str(out), "--logging_steps", "1", "--save_images_steps", "0", "--ddpm_num_inference_steps", "2", "--num_sample_images", "4", *TINY, *extra]
    return train_unconditional.main(argv)


def test_loss_falls_on_faces(demo_root, tmp_path):
    history = _train(demo_root, tmp_path / "run", "--max_train_steps", "100", "--learning_rate", "1e-3", "--lr_warmup_steps", "5", "--checkpointing_steps", "1000")
    losses = [loss for _, loss in history]
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.5 * first, f"loss did not fall enough: first10={first:.3f} last10={last:.3f}"


def test_resume_continues_the_same_run(demo_root, tmp_path):
    common = ["--max_train_steps", "8", "--checkpointing_steps", "4", "--save_images_steps", "2", "--checkpoints_total_limit", "0", "--use_ema", "--random_flip", "--lr_scheduler", "cosine", "--lr_warmup_steps", "2", "--gradient_accumulation_steps", "2"]
    full = _train(demo_root, tmp_path / "full", *common)
    # "interrupted" run: only the step-4 checkpoint survives, then resume with "latest"
    os.makedirs(tmp_path / "resumed")
    shutil.copytree(tmp_path / "full" / "checkpoint-4", tmp_path / "resumed" / "checkpoint-4")
    resumed = _train(demo_root, tmp_path / "resumed", *common, "--resume_from_checkpoint", "latest")
    assert [s for s, _ in resumed] == [5, 6, 7, 8]
    np.testing.assert_allclose([l for _, l in resumed], [l for s, l in full if s > 4], rtol=1e-4)
    a = paddle.load(str(tmp_path / "full" / "checkpoint-8" / "training_state.pdparams"))
    b = paddle.load(str(tmp_path / "resumed" / "checkpoint-8" / "training_state.pdparams"))
    assert a["step"] == b["step"] == 8
    for key in a["model"]:
        np.testing.assert_allclose(a["model"][key].numpy(), b["model"][key].numpy(), rtol=1e-4, atol=1e-6, err_msg=key)
    for sa, sb in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"]):
        np.testing.assert_allclose(sa.numpy(), sb.numpy(), rtol=1e-4, atol=1e-6)
    assert a["optimizer"].keys() == b["optimizer"].keys()


def test_saved_pipeline_loads_and_samples(demo_root, tmp_path):
    from ppdiffusers import DDPMPipeline, UNet2DModel

    out = tmp_path / "run"
    _train(demo_root, out, "--max_train_steps", "3", "--checkpointing_steps", "3", "--use_ema")
    pipeline = DDPMPipeline.from_pretrained(str(out))
    images = pipeline(batch_size=2, num_inference_steps=3, output_type="np").images
    assert images.shape == (2, 16, 16, 3)
    assert 0.0 <= images.min() and images.max() <= 1.0
    # save -> load gives identical outputs
    unet = pipeline.unet
    unet.eval()
    reloaded = UNet2DModel.from_pretrained(str(out / "unet"))
    reloaded.eval()
    x, t = paddle.randn([2, 3, 16, 16]), paddle.to_tensor([10, 500])
    np.testing.assert_array_equal(unet(x, t).sample.numpy(), reloaded(x, t).sample.numpy())
    assert os.path.isfile(out / "samples" / "step-3.png")


def test_bad_input_errors_name_the_path(tmp_path, demo_root):
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        train_unconditional.main(["--train_data_dir", str(tmp_path / "no_such_dir"), "--output_dir", str(tmp_path / "o")])
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(os.path.join(demo_root, "faces", "face_000.png"), folder)
    (folder / "notes.dat").write_text("not an image")
    with pytest.raises(ValueError, match="notes.dat"):
        train_unconditional.main(["--train_data_dir", str(folder), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_unconditional.main(["--train_data_dir", os.path.join(demo_root, "faces"), "--output_dir", str(tmp_path / "o"), "--train_batch_size", "500"])


def test_trainer_style_milestones_resume_and_sample(demo_root, tmp_path):
    def make():
        paddle.seed(0)
        model = Unet(dim=16, dim_mults=(1, 2), image_size=16, layers_per_block=1, attention_levels=(1,))
        diffusion = GaussianDiffusion(model, image_size=16, timesteps=100, sampling_timesteps=4)
        return Trainer(diffusion, os.path.join(demo_root, "faces"), train_batch_size=8, train_lr=1e-3, train_num_steps=4, save_and_sample_every=2, num_samples=4, results_folder=str(tmp_path / "results"), logging_steps=1)

    trainer = make()
    losses = trainer.train()
    assert len(losses) == 4 and all(np.isfinite(losses))
    for n in (1, 2):
        assert os.path.isfile(tmp_path / "results" / f"model-{n}.pdparams")
        assert os.path.isfile(tmp_path / "results" / f"sample-{n}.png")
    # load(1) resumes at step 2 and replays steps 3-4 exactly
    again = make()
    again.load(1)
    assert again.step == 2
    np.testing.assert_allclose(again.train(), losses[2:], rtol=1e-4)
    images = again.diffusion.sample(batch_size=2, seed=0)
    assert tuple(images.shape) == (2, 3, 16, 16)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    with pytest.raises(FileNotFoundError, match="model-9"):
        again.load(9)


def test_two_process_launch_keeps_ranks_in_sync(launch_2proc, demo_root, tmp_path):
    out = tmp_path / "ddp"
    proc, log_dir = launch_2proc(
        "ddpm_tutorial/train_unconditional.py",
        "--train_data_dir", os.path.join(demo_root, "faces"), "--output_dir", out, "--max_train_steps", "3",
        "--checkpointing_steps", "3", "--save_images_steps", "0", "--ddpm_num_inference_steps", "2", "--num_sample_images", "2", *TINY,
        timeout=240,
    )
    from conftest import rank_checksums

    sums = rank_checksums(log_dir)
    assert sums[0] == pytest.approx(sums[1], rel=1e-6)
    assert os.path.isfile(out / "checkpoint-3" / "training_state.pdparams")  # written once, by rank 0
    assert os.path.isfile(out / "model_index.json")


def test_launchers_smoke(run_shell, tmp_path):
    out = tmp_path / "main_job"
    run_shell("ddpm_tutorial/run_train_ddpm.sh", "--resolution", "16", "--block_out_channels", "16", "32", "--attention_levels", "1", "--ddpm_num_inference_steps", "2",
              env={"OUTPUT_DIR": str(out), "MAX_TRAIN_STEPS": "2", "BATCH_SIZE": "4", "GRID_SIZE": "2", "NPROC": "1"}, timeout=300)
    assert os.path.isfile(out / "grid.png") and os.path.isfile(out / "model_index.json")
    res = tmp_path / "trainer_style"
    run_shell("ddpm_tutorial/run_train_trainer_style.sh", "--image_size", "16", "--dim_mults", "1", "2", "--attention_levels", "1", "--sampling_timesteps", "2", "--num_samples", "4", "--train_batch_size", "4",
              env={"RESULTS_FOLDER": str(res), "TRAIN_NUM_STEPS": "2", "SAVE_EVERY": "2"}, timeout=300)
    assert os.path.isfile(res / "sample-1.png") and os.path.isfile(res / "model-1.pdparams")


class _ConstantX0(paddle.nn.Layer):
    """Stands in for a UNet whose output is read as x0: always the same image ``c``."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x, t, **kwargs):
        return type("Out", (), {"sample": paddle.full_like(x, self.c)})()


@pytest.mark.parametrize("objective", ["pred_x0", "pred_v", "pred_noise"])
def test_objective_targets(objective):
    """The loss is zero exactly when the model outputs the objective's target (x0, v or eps)."""
    paddle.seed(3)
    x_start = paddle.rand([4, 3, 8, 8]) * 2 - 1
    diffusion = GaussianDiffusion(_ConstantX0(0.0), image_size=8, timesteps=100, objective=objective)
    # replay the loss's own draws: noise first, then timesteps
    paddle.seed(7)
    noise = paddle.randn(x_start.shape)
    t = paddle.randint(0, 100, [4], dtype="int64")
    sched = diffusion.noise_scheduler
    target = {"pred_x0": x_start, "pred_noise": noise, "pred_v": sched.get_velocity(x_start, noise, t)}[objective]

    class Oracle(paddle.nn.Layer):
        def forward(self, x, timesteps):
            assert bool((timesteps == t).all())
            np.testing.assert_allclose(x.numpy(), sched.add_noise(x_start, noise, t).numpy(), atol=1e-6)
            return type("Out", (), {"sample": target})()

    paddle.seed(7)
    assert float(diffusion.training_losses(Oracle(), x_start)["loss"]) < 1e-10
    assert sched.config.prediction_type == {"pred_x0": "sample", "pred_noise": "epsilon", "pred_v": "v_prediction"}[objective]
    with pytest.raises(ValueError, match="objective"):
        GaussianDiffusion(_ConstantX0(0.0), image_size=8, objective="pred_eps")


def test_x0_model_samples_its_prediction():
    """With --prediction_type sample, DDIM sampling ends at the model's x0 (a constant image here)."""
    from ppdiffusers import DDIMScheduler, DDPMScheduler

    scheduler = DDIMScheduler.from_config(DDPMScheduler(num_train_timesteps=1000, prediction_type="sample").config)
    scheduler.set_timesteps(20)
    model = _ConstantX0(0.3)
    x = paddle.randn([2, 3, 8, 8])
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t).sample, t, x).prev_sample
    assert float(np.abs(x.numpy() - 0.3).max()) < 1e-3
