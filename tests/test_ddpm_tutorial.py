"""ddpm_tutorial/: both training styles on the bundled faces, checkpoints, resume, pipeline, launch."""
import os
import re
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
    common = ["--max_train_steps", "8", "--checkpointing_steps", "4", "--save_images_steps", "2", "--checkpoints_total_limit", "0", "--use_ema", "--random_flip",
              "--lr_scheduler", "cosine", "--lr_warmup_steps", "2", "--gradient_accumulation_steps", "2"]
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


def test_min_snr_weighting_and_sigmoid_schedule_in_the_explicit_loop(demo_root, tmp_path):
    """--snr_gamma weights each sample's x0 MSE by min(SNR, gamma) (Hang et al. 2023); --ddpm_beta_schedule
    sigmoid trains on lucidrains' sigmoid betas and saves them, so the DDPMPipeline samples the same chain."""
    from ppdiffusers import DDPMPipeline

    from denoising_diffusion import sigmoid_beta_schedule

    common = ["--max_train_steps", "2", "--checkpointing_steps", "1000", "--prediction_type", "sample", "--seed", "3"]
    plain = [loss for _, loss in _train(demo_root, tmp_path / "plain", *common)]
    weighted = [loss for _, loss in _train(demo_root, tmp_path / "w", *common, "--snr_gamma", "0.1", "--ddpm_beta_schedule", "sigmoid")]
    assert all(np.isfinite(weighted)) and weighted[0] < 0.2 * plain[0]  # weights <= 0.1: the weighted loss is far smaller
    pipe = DDPMPipeline.from_pretrained(str(tmp_path / "w"))
    np.testing.assert_allclose(pipe.scheduler.betas.numpy(), sigmoid_beta_schedule(1000), rtol=1e-5)
    with pytest.raises(SystemExit):
        train_unconditional.parse_args(["--snr_gamma", "0"])


def test_saved_pipeline_loads_and_samples(demo_root, tmp_path):
    from ppdiffusers import DDPMPipeline, UNet2DModel

    out = tmp_path / "run"
    _train(demo_root, out, "--max_train_steps", "3", "--checkpointing_steps", "3", "--use_ema")
    pipeline = DDPMPipeline.from_pretrained(str(out))
    # --use_ema: the exported UNet holds the EMA weights of the last checkpoint, not the raw ones
    state = paddle.load(str(out / "checkpoint-3" / "training_state.pdparams"))
    exported = list(pipeline.unet.parameters())
    assert len(exported) == len(state["ema"]["shadow_params"])
    for p, shadow in zip(exported, state["ema"]["shadow_params"]):
        np.testing.assert_array_equal(p.numpy(), shadow.numpy())
    assert any(not np.array_equal(p.numpy(), state["model"][name].numpy()) for name, p in pipeline.unet.named_parameters())
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


def test_grayscale_trains_a_one_channel_unet_on_the_luma(demo_root, tmp_path):
    """--grayscale: the batches become PIL's convert('L') luma, the UNet has 1 channel in and out, and
    the saved DDPMPipeline samples one-channel images (PIL mode 'L')."""
    from PIL import Image
    from ppdiffusers import DDPMPipeline

    rgb = np.random.RandomState(0).randint(0, 256, (5, 7, 3)).astype(np.uint8)
    batch = paddle.to_tensor(rgb.transpose(2, 0, 1)[None].astype("float32") / 127.5 - 1)
    luma = (train_unconditional.to_grayscale(batch).numpy()[0, 0] + 1) * 127.5
    np.testing.assert_allclose(luma, np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64), atol=0.51)  # PIL rounds
    gray = paddle.full([2, 3, 4, 4], 0.25)
    np.testing.assert_allclose(train_unconditional.to_grayscale(gray).numpy(), np.full([2, 1, 4, 4], 0.25), rtol=1e-6)
    with pytest.raises(ValueError, match="RGB batches"):
        train_unconditional.to_grayscale(paddle.zeros([2, 1, 4, 4]))

    out = tmp_path / "gray"
    history = _train(demo_root, out, "--max_train_steps", "2", "--checkpointing_steps", "2", "--grayscale")
    assert len(history) == 2 and all(np.isfinite([loss for _, loss in history]))
    pipeline = DDPMPipeline.from_pretrained(str(out))
    assert pipeline.unet.config.in_channels == pipeline.unet.config.out_channels == 1
    images = pipeline(batch_size=2, num_inference_steps=2).images
    assert [im.mode for im in images] == ["L", "L"] and images[0].size == (16, 16)


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


SHIFT_LOSSES = """
import os, sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, os.path.join({repo!r}, "ddpm_tutorial"))
import train_unconditional
rank, calls, mse = int(os.environ.get("PADDLE_TRAINER_ID", "0")), [0], train_unconditional.F.mse_loss
def shifted(a, b, *args, **kw):  # + 1000 on rank 1, + 100 on every second micro-batch: same gradients, visible means
    calls[0] += 1
    return mse(a, b, *args, **kw) + 1000.0 * rank + 100.0 * (calls[0] % 2 == 0)
train_unconditional.F.mse_loss = shifted
train_unconditional.main(sys.argv[1:])
"""


def test_two_process_launch_keeps_ranks_in_sync_and_logs_the_mean_loss(launch_2proc, demo_root, tmp_path):
    """Both ranks end with the same weights, and the logged loss is the mean over ranks and micro-batches
    (rank 1's losses are shifted by 1000, every second micro-batch's by 100: the mean is shifted by 550)."""
    wrapper = tmp_path / "shift_losses.py"
    wrapper.write_text(SHIFT_LOSSES.format(repo=REPO_ROOT))
    out = tmp_path / "ddp"
    proc, log_dir = launch_2proc(
        str(wrapper),
        "--train_data_dir", os.path.join(demo_root, "faces"), "--output_dir", out, "--max_train_steps", "3", "--gradient_accumulation_steps", "2",
        "--logging_steps", "3", "--checkpointing_steps", "3", "--save_images_steps", "0", "--ddpm_num_inference_steps", "2", "--num_sample_images", "2", *TINY,
        timeout=240,
    )
    from conftest import rank_checksums

    sums = rank_checksums(log_dir)
    assert sums[0] == pytest.approx(sums[1], rel=1e-6)
    logged = float(re.search(r"step 3 loss=(\S+)", (log_dir / "workerlog.0").read_text()).group(1))
    assert 550.0 < logged < 555.0, logged  # the unshifted MSE of a fresh UNet is about 1
    assert os.path.isfile(out / "checkpoint-3" / "training_state.pdparams")  # written once, by rank 0
    assert os.path.isfile(out / "model_index.json")


def test_launchers_smoke(run_shell, tmp_path):
    out = tmp_path / "main_job"
    proc = run_shell("ddpm_tutorial/run_train_ddpm.sh", "--resolution", "16", "--block_out_channels", "16", "32", "--attention_levels", "1", "--ddpm_num_inference_steps", "2",
                     env={"OUTPUT_DIR": str(out), "MAX_STEPS": "2", "BATCH_SIZE": "4", "GRID_SIZE": "2", "NPROC": "1", "NUM_INFERENCE_STEPS": "2"}, timeout=300)
    assert os.path.isfile(out / "model_index.json")
    assert re.search(r"face rate [0-9.]+ \(\d/4\)", proc.stdout), proc.stdout[-1000:]  # the launcher scores its pipeline: GRID_SIZE**2 samples
    from PIL import Image
    from ppdiffusers import DDPMPipeline

    assert Image.open(out / "grid.png").size == (2 * (2 * 16 + 3 * 2),) * 2  # the scored samples, 2 x 2, upscaled 2x
    assert DDPMPipeline.from_pretrained(str(out)).unet.config.in_channels == 1  # GRAYSCALE=1 by default: the faces are gray
    bad = run_shell("ddpm_tutorial/run_train_ddpm.sh", env={"OUTPUT_DIR": str(tmp_path / "bad"), "GRAYSCALE": "yes"}, timeout=60, check=False)
    assert bad.returncode == 2 and "GRAYSCALE must be 0 or 1, got 'yes'" in bad.stderr
    res = tmp_path / "trainer_style"  # the shared knob names; run from another working directory
    run_shell("ddpm_tutorial/run_train_trainer_style.sh", "--dim_mults", "1", "2", "--attention_levels", "1", "--num_samples", "4",
              env={"OUTPUT_DIR": str(res), "RESOLUTION": "16", "MAX_STEPS": "2", "SAVE_STEPS": "2", "BATCH_SIZE": "4", "NUM_INFERENCE_STEPS": "2",
                   "NUM_EVAL_IMAGES": "2"}, timeout=300, cwd=str(tmp_path))
    assert os.path.isfile(res / "sample-1.png") and os.path.isfile(res / "model-1.pdparams")
    assert os.path.isfile(res / "model-last.pdparams") and os.path.isfile(res / "pipeline" / "model_index.json")


class _ConstantX0(paddle.nn.Layer):
    """Stands in for a UNet whose output is read as x0: always the same image ``c``."""

    config = {"in_channels": 3}

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


# ---------------------------------------------------------------------------------------------
# GaussianDiffusion against lucidrains denoising_diffusion_pytorch (issue 12, rows 4-6).
# Every literal below is "# REF": lucidrains denoising_diffusion_pytorch 2.3.1 GaussianDiffusion
# (denoising_diffusion_pytorch/denoising_diffusion_pytorch.py), computed in a torch 2.13 CPU venv
# outside this repo, with the inputs of _reference_inputs() and the model _Fixed.


class _Fixed(paddle.nn.Layer):
    """A deterministic stand-in network: ``0.5 roll(x, 1, channel) + 0.25 tanh(x) + 1e-3 t`` (same in the torch run)."""

    config = {"in_channels": 3}

    def forward(self, x, t):
        out = 0.5 * paddle.roll(x, 1, axis=1) + 0.25 * paddle.tanh(x) + 1e-3 * t.astype("float32").reshape([-1, 1, 1, 1])
        return type("Out", (), {"sample": out})()


def _reference_inputs():
    """x0 (4,3,8,8) in [-1, 1], eps (4,3,8,8), x_T (2,3,4,4), 100 DDIM step noises (2,3,4,4): the torch run drew the same."""
    rs = np.random.RandomState(0)
    x0 = rs.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    noise = rs.standard_normal((4, 3, 8, 8)).astype(np.float32)
    x_T = rs.standard_normal((2, 3, 4, 4)).astype(np.float32)
    step_noise = rs.standard_normal((100, 2, 3, 4, 4)).astype(np.float32)
    return x0, noise, x_T, step_noise


def test_defaults_follow_the_reference():
    d = GaussianDiffusion(_Fixed(), image_size=8)
    assert (d.objective, d.num_timesteps, d.sampling_timesteps, d.ddim_sampling_eta) == ("pred_v", 1000, 1000, 0.0)
    assert d.config["beta_schedule"] == "sigmoid" and d.config["min_snr_loss_weight"] is False and d.config["min_snr_gamma"] == 5


def test_beta_schedules_match_reference():
    """Row 6: linear betas scale with 1000 / T; "sigmoid" is lucidrains' (start -3, end 3, tau 1), not ppdiffusers' GeoDiff one."""
    lin100 = GaussianDiffusion(_Fixed(), image_size=8, timesteps=100, beta_schedule="linear")
    np.testing.assert_allclose(lin100.noise_scheduler.betas.numpy()[[0, 99]], [0.001, 0.2], rtol=1e-6)  # REF (old code: 1e-4, 0.02)
    # REF linear_beta_schedule(100)[[0, 1, 50, 99]]
    np.testing.assert_allclose(lin100.betas[[0, 1, 50, 99]], [0.001, 0.00301010101010101, 0.10150505050505051, 0.2], rtol=1e-12)
    lin1000 = GaussianDiffusion(_Fixed(), image_size=8, timesteps=1000, beta_schedule="linear")
    np.testing.assert_allclose(lin1000.noise_scheduler.betas.numpy()[[0, 999]], [0.0001, 0.02], rtol=1e-6)  # REF linear_beta_schedule(1000)
    sig = GaussianDiffusion(_Fixed(), image_size=8, timesteps=1000, beta_schedule="sigmoid")
    ref_sig = [0.0003002791974102692, 0.00030200411683434236, 0.0033143641842271476, 0.5013504179271411, 0.999]  # REF sigmoid_beta_schedule(1000)[[0, 1, 500, 998, 999]]
    np.testing.assert_allclose(sig.noise_scheduler.betas.numpy()[[0, 1, 500, 998, 999]], ref_sig, rtol=1e-6)
    np.testing.assert_allclose(sig.betas[[0, 1, 500, 998, 999]], ref_sig, rtol=1e-7)
    sig100 = GaussianDiffusion(_Fixed(), image_size=8, timesteps=100, beta_schedule="sigmoid")
    np.testing.assert_allclose(sig100.noise_scheduler.betas.numpy()[[0, 50, 99]], [0.0030772859360739258, 0.033133801728974954, 0.999], rtol=1e-6)  # REF sigmoid_beta_schedule(100)
    cos = GaussianDiffusion(_Fixed(), image_size=8, timesteps=1000, beta_schedule="cosine")
    np.testing.assert_allclose(cos.noise_scheduler.betas.numpy()[[0, 500, 999]], [4.128422482196914e-05, 0.003155691441585007, 0.999], rtol=1e-6)  # REF cosine_beta_schedule(1000)
    for d in (lin100, sig, cos):  # the float64 tables the loss weights / DDIM use agree with the scheduler's float32 betas
        np.testing.assert_allclose(d.noise_scheduler.betas.numpy(), d.betas, rtol=1e-6)


# REF loss_weight[[0, 250, 500, 999]], timesteps=1000, beta_schedule="sigmoid", min_snr_gamma=5
REF_LOSS_WEIGHT = {
    ("pred_noise", False): [1.0, 1.0, 1.0, 1.0],
    ("pred_noise", True): [0.00150184694, 0.883301139, 1.0, 1.0],
    ("pred_x0", False): [3329.23413, 5.66058397, 0.993393183, 3.0028707e-07],
    ("pred_x0", True): [5.0, 5.0, 0.993393183, 3.0028707e-07],
    ("pred_v", False): [0.999699712, 0.849862993, 0.498342812, 3.00286985e-07],
    ("pred_v", True): [0.00150139595, 0.750684977, 0.498342812, 3.00286985e-07],
}


@pytest.mark.parametrize("objective, min_snr", list(REF_LOSS_WEIGHT))
def test_loss_weights_match_reference(objective, min_snr):
    """Row 4: SNR (pred_x0), SNR / (SNR + 1) (pred_v), 1 (pred_noise), each with the min-SNR clamp as an option."""
    d = GaussianDiffusion(_Fixed(), image_size=8, timesteps=1000, objective=objective, beta_schedule="sigmoid", min_snr_loss_weight=min_snr)
    np.testing.assert_allclose(d.loss_weight.numpy()[[0, 250, 500, 999]], REF_LOSS_WEIGHT[objective, min_snr], rtol=1e-6)
    lin = GaussianDiffusion(_Fixed(), image_size=8, timesteps=100, objective=objective, beta_schedule="linear", min_snr_loss_weight=min_snr)
    if not min_snr:  # REF loss_weight[[0, 50, 99]], timesteps=100, beta_schedule="linear"
        ref = {"pred_noise": [1.0, 1.0, 1.0], "pred_x0": [999.0, 0.0714273751, 2.03905056e-05], "pred_v": [0.999000013, 0.0666656271, 2.0390089e-05]}[objective]
        np.testing.assert_allclose(lin.loss_weight.numpy()[[0, 50, 99]], ref, rtol=1e-6)


# REF p_losses(x0, t=[0, 10, 500, 999], noise, loss_reduction="none"), timesteps=1000, sigmoid, model _Fixed
REF_LOSS = {
    ("pred_noise", False): [1.0705601, 0.99249202, 0.936686277, 1.84875762],
    ("pred_noise", True): [0.00160781736, 0.0169012789, 0.936686277, 1.84875762],
    ("pred_x0", False): [938.334351, 87.4850845, 0.723926544, 5.10415816e-07],
    ("pred_x0", True): [1.40923452, 1.48979497, 0.723926544, 5.10415816e-07],
    ("pred_v", False): [1.07490242, 0.998605371, 0.425081134, 4.52907813e-07],
    ("pred_v", True): [0.00161433883, 0.0170053821, 0.425081134, 4.52907813e-07],
}


@pytest.mark.parametrize("objective, min_snr", list(REF_LOSS))
def test_weighted_loss_matches_reference(objective, min_snr):
    """Row 4 end to end: same x0, eps, t and network give lucidrains' weighted loss (old code: unweighted MSE, 0.79 vs 739 for pred_x0 linear)."""
    x0, noise, _, _ = _reference_inputs()
    d = GaussianDiffusion(_Fixed(), image_size=8, timesteps=1000, objective=objective, beta_schedule="sigmoid", min_snr_loss_weight=min_snr)
    out = d.training_losses(d.model, paddle.to_tensor(x0), t=paddle.to_tensor([0, 10, 500, 999]), noise=paddle.to_tensor(noise))
    np.testing.assert_allclose(out["loss_per_sample"].numpy(), REF_LOSS[objective, min_snr], rtol=1e-5)
    np.testing.assert_allclose([float(out["loss"])], [np.mean(REF_LOSS[objective, min_snr])], rtol=1e-5)
    if objective == "pred_x0" and not min_snr:  # REF p_losses(...).mean() with beta_schedule="linear"
        lin = GaussianDiffusion(_Fixed(), image_size=8, timesteps=1000, objective="pred_x0", beta_schedule="linear")
        loss = lin.training_losses(lin.model, paddle.to_tensor(x0), t=paddle.to_tensor([0, 10, 500, 999]), noise=paddle.to_tensor(noise))["loss"]
        np.testing.assert_allclose([float(loss)], [739.339631], rtol=1e-5)


def test_ddim_timesteps_match_reference():
    """Row 5: lucidrains' trailing grid linspace(-1, T-1, S+1) -> 999, 979, ..., 19, -1 (old code: ppdiffusers' leading 980, ..., 0)."""
    def times(T, S):
        pairs = GaussianDiffusion(_Fixed(), image_size=8, timesteps=T, sampling_timesteps=S).ddim_time_pairs()
        assert all(a == b for (_, a), (b, _) in zip(pairs, pairs[1:]))
        return [t for t, _ in pairs] + [pairs[-1][1]]

    assert times(1000, 50) == list(range(999, 0, -20)) + [-1]  # REF: 999, 979, ..., 19, -1
    assert times(100, 4) == [99, 74, 49, 24, -1]  # REF
    assert times(1000, 30)[:5] == [999, 965, 932, 899, 865] and times(1000, 30)[-3:] == [65, 32, -1]  # REF (S does not divide T)
    t90 = times(100, 90)  # REF: torch's float32 linspace puts 98 just below an integer
    assert t90[:5] == [99, 97, 96, 95, 94] and len(t90) == 91 and t90[-3:] == [1, 0, -1]


# REF ddim_sample(): x_T and step noises of _reference_inputs(), model _Fixed, output in [0, 1]
# (flat indices, values at them, sum, sum of squares)
REF_DDIM = {
    (100, 4, "sigmoid", "pred_v", 0.0): ([1, 2, 3, 5, 6, 7], [0.90027988, 0.55150217, 0.90409648, 0.45642424, 0.53039038, 0.26563281], 46.820096, 32.089078),
    (1000, 30, "sigmoid", "pred_v", 0.5): ([1, 3, 5, 7, 9, 10], [0.21811306, 0.45771456, 0.06576404, 0.13462466, 0.33400688, 0.070646316], 33.256185, 22.020164),
    (1000, 50, "sigmoid", "pred_x0", 0.0): ([0, 1, 2, 3, 4, 5], [0.72358966, 0.84964359, 0.80431414, 0.85052985, 0.79940104, 0.76853704], 68.683487, 50.666837),
    (1000, 50, "linear", "pred_noise", 0.0): ([2, 5, 6, 15, 16, 18], [0.47540951, 0.13327047, 0.093094528, 0.52532274, 0.13378352, 0.2976926], 37.210392, 32.319772),
}


@pytest.mark.parametrize("case", list(REF_DDIM))
def test_ddim_sampling_matches_reference(case):
    """Row 5: DDIM (eq. 12 of Song et al.) with eps re-derived from the clipped x0, over the reference grid, eta 0 and 0.5."""
    T, S, schedule, objective, eta = case
    idx, values, total, total_sq = REF_DDIM[case]
    _, _, x_T, step_noise = _reference_inputs()
    d = GaussianDiffusion(_Fixed(), image_size=4, timesteps=T, sampling_timesteps=S, objective=objective, beta_schedule=schedule, ddim_sampling_eta=eta)
    out = d.ddim_sample(paddle.to_tensor(x_T), variance_noise=[paddle.to_tensor(z) for z in step_noise])
    images = ((out.numpy() + 1) * 0.5).reshape(-1)
    np.testing.assert_allclose(images[idx], values, atol=1e-5)
    np.testing.assert_allclose([images.sum(), (images**2).sum()], [total, total_sq], atol=1e-4)


def test_ddim_step_rederives_eps_from_the_clipped_x0():
    """One step by hand: x0 clipped to [-1, 1], eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar), then eq. 12."""
    d = GaussianDiffusion(_Fixed(), image_size=4, timesteps=1000, sampling_timesteps=50, objective="pred_x0")
    x = paddle.to_tensor(np.linspace(-3, 3, 2 * 3 * 4 * 4, dtype=np.float32).reshape([2, 3, 4, 4]))
    out = paddle.full_like(x, 1.7)  # an x0 estimate outside [-1, 1]
    x_next, x_start = d.ddim_step(x, 999, 979, out)
    a, a_next = d.alphas_cumprod[999], d.alphas_cumprod[979]
    eps = (x.numpy() - np.sqrt(a) * 1.0) / np.sqrt(1 - a)
    np.testing.assert_array_equal(x_start.numpy(), np.ones(x.shape, np.float32))
    np.testing.assert_allclose(x_next.numpy(), np.sqrt(a_next) * 1.0 + np.sqrt(1 - a_next) * eps, rtol=1e-5, atol=1e-6)
    last, _ = d.ddim_step(x, 19, -1, out)
    np.testing.assert_array_equal(last.numpy(), np.ones(x.shape, np.float32))
    with pytest.raises(ValueError, match="noise"):
        GaussianDiffusion(_Fixed(), image_size=4, sampling_timesteps=50, ddim_sampling_eta=1.0).ddim_step(x, 999, 979, out)


@pytest.mark.parametrize("kwargs, name", [
    ({"objective": "pred_eps"}, "objective"),
    ({"beta_schedule": "squaredcos_cap_v2"}, "beta_schedule"),
    ({"sampling_timesteps": 1001}, "sampling_timesteps"),
    ({"sampling_timesteps": 0}, "sampling_timesteps"),
    ({"timesteps": 0}, "timesteps"),
    ({"timesteps": 20, "beta_schedule": "linear"}, "timesteps"),
    ({"ddim_sampling_eta": -0.1}, "ddim_sampling_eta"),
    ({"min_snr_loss_weight": True, "min_snr_gamma": 0}, "min_snr_gamma"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GaussianDiffusion(_Fixed(), image_size=8, **kwargs)


def test_pipeline_carries_the_sigmoid_betas(tmp_path):
    """The saved DDPMPipeline's scheduler config holds the reference schedule, so it samples the same DDPM chain."""
    from ppdiffusers import DDPMPipeline

    paddle.seed(0)
    model = Unet(dim=16, dim_mults=(1, 2), image_size=16, layers_per_block=1, attention_levels=())
    diffusion = GaussianDiffusion(model, image_size=16, timesteps=100)
    diffusion.pipeline().save_pretrained(str(tmp_path / "pipe"))
    loaded = DDPMPipeline.from_pretrained(str(tmp_path / "pipe"))
    np.testing.assert_allclose(loaded.scheduler.betas.numpy(), diffusion.betas, rtol=1e-6)
    assert loaded.scheduler.config.prediction_type == "v_prediction" and loaded.scheduler.config.clip_sample


# ---------------------------------------------------------------- compact Trainer: run safety
TRAINER_SCRIPT = os.path.join(REPO_ROOT, "ddpm_tutorial", "train_trainer_style.py")
TINY_TRAINER = ["--image_size", "16", "--dim", "16", "--dim_mults", "1", "2", "--attention_levels", "--layers_per_block", "1", "--timesteps", "100",
                "--sampling_timesteps", "2", "--num_samples", "4", "--train_batch_size", "4", "--logging_steps", "1"]


def _trainer_style_args(demo_root, out, *extra):
    return ["--folder", os.path.join(demo_root, "faces"), "--results_folder", str(out), *TINY_TRAINER, *map(str, extra)]


def _trainer_style(demo_root, out, *extra):
    """Run ``train_trainer_style.main`` in this process; returns its per-step losses."""
    import train_trainer_style

    return train_trainer_style.main(_trainer_style_args(demo_root, out, *extra))


def _milestone(out, name):
    return paddle.load(str(out / f"model-{name}.pdparams"))


def _assert_same_state(a, b):
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        np.testing.assert_array_equal(a["model"][k].numpy(), b["model"][k].numpy(), err_msg=k)
    for sa, sb in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"]):
        np.testing.assert_array_equal(sa.numpy(), sb.numpy())


def test_trainer_style_seed_sets_the_initial_weights(demo_root, tmp_path):
    # 1 step: runs are deterministic given --seed, so equal states after a step mean equal initial
    # weights (before the fix the UNet was built unseeded and two runs with one seed differed)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert len(_trainer_style(demo_root, tmp_path / name, "--train_num_steps", 1, "--seed", seed)) == 1
    a, b, c = (_milestone(tmp_path / name, "last") for name in "abc")
    assert a["step"] == 1
    _assert_same_state(a, b)  # same --seed: same initial weights
    assert any(not np.array_equal(a["model"][k].numpy(), c["model"][k].numpy()) for k in a["model"])  # another seed: others


def test_trainer_style_saves_the_end_when_steps_are_not_a_multiple(demo_root, tmp_path):
    from ppdiffusers import DDPMPipeline

    out = tmp_path / "run"
    losses = _trainer_style(demo_root, out, "--train_num_steps", 3, "--save_and_sample_every", 2)
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert _milestone(out, 1)["step"] == 2
    last = _milestone(out, "last")
    assert last["step"] == 3 and isinstance(last["rng"], list) and len(last["rng"]) == 1
    assert os.path.isfile(out / "sample-1.png") and os.path.isfile(out / "sample-last.png")
    assert not os.path.exists(out / ".run.lock")  # released at the end
    pipeline = DDPMPipeline.from_pretrained(str(out / "pipeline"))  # the DDPMPipeline, holding the EMA weights
    for p, shadow in zip(pipeline.unet.parameters(), last["ema"]["shadow_params"]):
        np.testing.assert_array_equal(p.numpy(), shadow.numpy())
    images = pipeline(batch_size=1, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 16, 16, 3)


def test_trainer_style_resume_from_a_milestone_is_exact(demo_root, tmp_path):
    common = ["--train_num_steps", 5, "--save_and_sample_every", 2, "--gradient_accumulate_every", 2]
    full = _trainer_style(demo_root, tmp_path / "full", *common)
    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "full" / "model-1.pdparams", tmp_path / "resumed")
    resumed = _trainer_style(demo_root, tmp_path / "resumed", *common, "--load_milestone", 1)
    assert resumed == full[2:]
    _assert_same_state(_milestone(tmp_path / "full", "last"), _milestone(tmp_path / "resumed", "last"))
    _assert_same_state(_milestone(tmp_path / "full", 2), _milestone(tmp_path / "resumed", 2))


def test_trainer_style_nan_exits_nonzero_and_keeps_the_good_milestone(demo_root, tmp_path, run_script):
    out = tmp_path / "run"
    _trainer_style(demo_root, out, "--train_num_steps", 2, "--save_and_sample_every", 2)
    good = {name: (out / name).read_bytes() for name in ("model-1.pdparams", "model-last.pdparams")}
    pipeline_written = os.path.getmtime(out / "pipeline" / "model_index.json")
    proc = run_script(TRAINER_SCRIPT, *_trainer_style_args(demo_root, out, "--train_num_steps", 8, "--save_and_sample_every", 2, "--load_milestone", 1,
                                                           "--train_lr", 1e30), check=False, timeout=180)
    assert proc.returncode != 0, proc.stderr[-3000:]
    assert "NonFiniteError: non-finite loss or gradient at step " in proc.stderr, proc.stderr[-3000:]
    assert "model-1.pdparams (resume with --load_milestone 1" in proc.stderr
    for name, data in good.items():
        assert (out / name).read_bytes() == data, f"{name} was overwritten"
    for name in os.listdir(out):
        if name.endswith(".pdparams"):
            assert all(np.isfinite(v.numpy()).all() for v in paddle.load(str(out / name))["model"].values()), name
    assert os.path.getmtime(out / "pipeline" / "model_index.json") == pipeline_written
    assert not os.path.exists(out / ".run.lock")


def test_trainer_style_sigterm_saves_last_and_exits_nonzero(demo_root, tmp_path):
    import signal
    import subprocess
    import threading

    out = tmp_path / "run"
    cmd = [sys.executable, TRAINER_SCRIPT, *_trainer_style_args(demo_root, out, "--train_num_steps", 100000, "--save_and_sample_every", 100000)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, sent = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "step 3 loss=" in line and not sent.is_set():
                sent.set()
                proc.send_signal(signal.SIGTERM)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    text = "".join(lines)
    assert sent.is_set() and rc == 128 + signal.SIGTERM, text[-3000:]
    step = int(text.split("stopped by SIGTERM at step ")[1].split(":")[0])
    assert step >= 3 and _milestone(out, "last")["step"] == step
    assert not os.path.exists(out / ".run.lock") and not os.path.exists(out / "pipeline")


def _tiny_trainer(demo_root, results_folder, **kwargs):
    paddle.seed(0)
    model = Unet(dim=16, dim_mults=(1, 2), image_size=16, layers_per_block=1, attention_levels=())
    diffusion = GaussianDiffusion(model, image_size=16, timesteps=100, sampling_timesteps=2)
    return Trainer(diffusion, os.path.join(demo_root, "faces"), train_batch_size=4, results_folder=str(results_folder), **kwargs)


def test_trainer_style_second_run_into_the_same_folder_fails(demo_root, tmp_path):
    from common.run_guard import OutputDirInUseError

    results = tmp_path / "results"
    first = _tiny_trainer(demo_root, results)
    assert os.path.isfile(results / ".run.lock")
    with pytest.raises(OutputDirInUseError, match="--results_folder .* is in use by another training run"):
        _tiny_trainer(demo_root, results)
    first.close()
    assert not os.path.exists(results / ".run.lock")
    _tiny_trainer(demo_root, results).close()  # free again


SHIFT_RANK1_LOSS = """
import os, sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, os.path.join({repo!r}, "ddpm_tutorial"))
from common.cpu_env import apply_cpu_env
apply_cpu_env(verbose=False)
import denoising_diffusion, train_trainer_style
rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
original = denoising_diffusion.GaussianDiffusion.training_losses
def shifted(self, *args, **kwargs):  # rank 1's loss + 1000: the same gradients, a rank mean one can see
    out = original(self, *args, **kwargs)
    out["loss"] = out["loss"] + 1000.0 * rank
    return out
denoising_diffusion.GaussianDiffusion.training_losses = shifted
losses = train_trainer_style.main(sys.argv[1:])
print("[rank %d] losses %r" % (rank, losses), flush=True)
"""


def _rank_losses(log_dir):
    import ast
    import re

    found = {}
    for rank in (0, 1):
        m = re.search(rf"\[rank {rank}\] losses (\[.*\])", (log_dir / f"workerlog.{rank}").read_text())
        assert m, f"rank {rank} did not finish"
        found[rank] = ast.literal_eval(m.group(1))
    return found


def test_trainer_style_two_process_resume_restores_each_ranks_rng_and_logs_the_rank_mean(launch_2proc, demo_root, tmp_path):
    from conftest import rank_checksums

    wrapper = tmp_path / "shift_rank1.py"
    wrapper.write_text(SHIFT_RANK1_LOSS.format(repo=REPO_ROOT))
    args = ["--folder", os.path.join(demo_root, "faces"), *TINY_TRAINER, "--train_num_steps", "5", "--save_and_sample_every", "3", "--train_lr", "2e-3"]
    _, log_full = launch_2proc(str(wrapper), *args, "--results_folder", tmp_path / "full", timeout=200)
    full, full_losses = rank_checksums(log_full), _rank_losses(log_full)
    assert full[0] == full[1]
    # the loss is the mean over both ranks (rank 1's is shifted by 1000), the same on both ranks
    assert full_losses[0] == full_losses[1] and all(500 < v < 510 for v in full_losses[0]), full_losses
    rngs = _milestone(tmp_path / "full", 1)["rng"]
    assert isinstance(rngs, list) and len(rngs) == 2  # every rank's state
    shutil.rmtree(log_full)
    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "full" / "model-1.pdparams", tmp_path / "resumed")
    _, log_res = launch_2proc(str(wrapper), *args, "--results_folder", tmp_path / "resumed", "--load_milestone", "1", timeout=200)
    assert rank_checksums(log_res) == full  # each rank drew the noise of the uninterrupted run
    assert _rank_losses(log_res)[0] == full_losses[0][3:]
    _assert_same_state(_milestone(tmp_path / "full", "last"), _milestone(tmp_path / "resumed", "last"))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_scheduler_ends_at_the_predicted_x0(sampler):
    """common.diffusion_utils.ddpm_sampling_scheduler: ancestral DDPM on a respaced 10-step grid and DDIM
    both walk from noise to the model's x0 when the model always predicts the same x0 (prediction_type
    'sample'); the training betas and prediction type are kept; an unknown sampler is named."""
    from ppdiffusers import DDIMScheduler, DDPMScheduler

    from common.diffusion_utils import ddpm_sampling_scheduler

    train = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample")
    sched = ddpm_sampling_scheduler(train, sampler)
    assert type(sched) is {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[sampler] and sched is not train
    np.testing.assert_allclose(sched.betas.numpy(), train.betas.numpy())
    assert sched.config.prediction_type == "sample"
    sched.set_timesteps(10)
    assert len(sched.timesteps) == 10 and int(sched.timesteps[0]) >= 900
    paddle.seed(0)
    x0 = paddle.uniform([2, 1, 4, 4], min=-0.9, max=0.9)
    x = paddle.randn([2, 1, 4, 4])
    for t in sched.timesteps:
        x = sched.step(x0, t, x).prev_sample
    np.testing.assert_allclose(x.numpy(), x0.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="sampler must be one of"):
        ddpm_sampling_scheduler(train, "euler")


def test_sample_script_ddpm_sampler_and_step_range(demo_root, tmp_path):
    """sample.py --scheduler ddpm --num_inference_steps N samples the saved pipeline's ancestral chain on N
    respaced steps (a grid of N*N images, different from DDIM's deterministic grid); out-of-range steps are named;
    the training script's --ddpm_sampler ddpm draws its grids the same way."""
    import sample
    from PIL import Image

    out = tmp_path / "run"
    _train(demo_root, out, "--max_train_steps", "2", "--checkpointing_steps", "2", "--ddpm_sampler", "ddpm", "--save_images_steps", "1")
    assert os.path.isfile(out / "samples" / "step-1.png")
    grids = {}
    for sampler in ("ddpm", "ddim"):
        path = sample.main(["--pipeline_dir", str(out), "--scheduler", sampler, "--num_inference_steps", "3", "--grid_size", "2", "--upscale", "1",
                            "--output", str(tmp_path / f"{sampler}.png")])
        grids[sampler] = np.asarray(Image.open(path), dtype=np.float32)
        assert grids[sampler].shape[:2] == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)  # 2 x 2 images of 16 px, 2 px padding
    assert np.abs(grids["ddpm"] - grids["ddim"]).mean() > 1.0
    with pytest.raises(ValueError, match="--num_inference_steps must be in 1..1000"):
        sample.main(["--pipeline_dir", str(out), "--scheduler", "ddpm", "--num_inference_steps", "1001"])
