"""bench/ harness: ``--compare torch`` without torch skips cleanly, a Paddle row runs in its own
process (a training row and the sampling bench's DDPM row), ``--fast_ops False`` gives stock-paddle
rows, ``--real_batch`` sets the batch of the real-config rows, bench_ops' demo A/B prints its before/after rows, and (only when a torch interpreter is
given in $BENCH_TORCH_PYTHON) the PyTorch mirror holds the same number of parameters.  No timing
assertions: speed lives in bench/."""
import os
import re
import stat
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "bench"))

import bench_common  # noqa: E402

TINY_ROW = ["bench/bench_class_conditional.py", "--rows", "sit_demo", "--steps", "1", "--batch_size", "2"]


@pytest.fixture
def python_without_torch(tmp_path):
    """An interpreter (a wrapper around this one) whose ``sys.path`` starts with a ``torch`` package that fails to import."""
    fake = tmp_path / "hide" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch hidden by tests/test_bench.py')\n")
    wrapper = tmp_path / "python_without_torch"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{fake.parent}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper)


def test_torch_status_reports_the_import_error(python_without_torch):
    ok, text = bench_common.torch_status(python_without_torch)
    assert not ok
    assert "torch hidden by tests/test_bench.py" in text


def test_torch_status_of_a_missing_interpreter(tmp_path):
    ok, text = bench_common.torch_status(str(tmp_path / "no_such_python"))
    assert not ok and "no_such_python" in text


def test_a_failed_row_names_the_cause_not_a_warning():
    """A row killed by the OOM killer says so; a crash reports its error line, not a trailing python warning."""
    assert "killed by SIGKILL (out of memory?" in bench_common._parse("", -9, "  warnings.warn('x')\n")["error"]
    stderr = "Traceback ...\nMemoryError: cannot allocate\n/x/y.py:3: UserWarning: z\n  warnings.warn('z')\n"
    assert bench_common._parse("", 1, stderr) == {"error": "MemoryError: cannot allocate"}


def test_f8f16_row_lpips_runs_on_a_random_vgg16_trunk(tmp_path):
    """The f8/f16 VAE row times LPIPS with a random VGG16 trunk (no ImageNet file offline): the file it writes loads
    into autoencoder/vae_losses.LPIPS and gives a positive distance between different images, zero for equal ones."""
    import paddle

    import bench_autoencoder

    sys.path.insert(0, os.path.join(REPO, "autoencoder"))
    from vae_losses import LPIPS

    lpips = LPIPS(bench_autoencoder._random_vgg16_file(str(tmp_path)))
    paddle.seed(0)
    x, y = paddle.rand([2, 3, 32, 32]) * 2 - 1, paddle.rand([2, 3, 32, 32]) * 2 - 1
    assert float(lpips(x, y).min()) > 0 and float(lpips(x, x).max()) == 0.0
    assert bench_autoencoder.ROWS["f8f16"]["lpips"] and not bench_autoencoder.ROWS["demo"]["lpips"]


def test_time_steps_checks_its_arguments():
    calls = []
    out = bench_common.time_steps(lambda: calls.append(1), warmup=2, steps=3)
    assert len(calls) == 5 and out["ms_min"] <= out["ms_per_step"]
    with pytest.raises(ValueError, match="steps >= 1"):
        bench_common.time_steps(lambda: None, warmup=0, steps=0)


def test_compare_torch_without_torch_runs_the_paddle_row(python_without_torch):
    proc = subprocess.run([sys.executable, *TINY_ROW, "--compare", "torch", "--torch_python", python_without_torch],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "torch hidden by tests/test_bench.py" in out and "pip install torch diffusers" in out
    assert "PyTorch ms/step" not in out  # the Paddle-only table, no mirror was started
    row = [line for line in out.splitlines() if line.startswith("| SiT_demo.json")]
    assert len(row) == 1, out
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[2] == "2"  # batch
    assert float(cells[3]) > 0 and float(cells[5]) > 0  # ms/step and peak RSS were measured by the child


def test_sampling_bench_without_torch_runs_the_paddle_row(python_without_torch):
    proc = subprocess.run([sys.executable, "bench/bench_sampling.py", "--rows", "ddpm", "--num_inference_steps", "2", "--calls", "1",
                           "--compare", "torch", "--torch_python", python_without_torch], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "torch hidden by tests/test_bench.py" in out and "pip install torch diffusers" in out
    assert "PyTorch ms/step" not in out
    row = [line for line in out.splitlines() if line.startswith("| ddpm: DDPMPipeline")]
    assert len(row) == 1, out
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert "2 steps" in cells[0] and cells[1] == "2.49" and cells[2] == "16"  # the run_train_ddpm.sh UNet (4 levels, 1 channel), batch 16
    assert float(cells[3]) > 0 and float(cells[5]) > 0  # ms per call and peak RSS were measured by the child


def test_bad_shared_flag_is_named():
    proc = subprocess.run([sys.executable, *TINY_ROW, "--repeats", "0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--repeats must be >= 1" in proc.stderr


def test_real_batch_reaches_the_real_row_only():
    """``--real_batch`` sets the batch of a real-config row's child (DiT-S/2 at 4x32x32, default 4), not the demo rows';
    0 is refused naming the flag."""
    cmd = [sys.executable, "bench/bench_class_conditional.py", "--rows", "s2_32_sit", "sit_demo", "--batch_size", "3", "--steps", "1"]
    proc = subprocess.run(cmd + ["--real_batch", "2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    batches = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in proc.stdout.splitlines()
               if line.startswith("| DiT-S/2 @ 4x32x32") or line.startswith("| SiT_demo.json")}
    assert batches == {"DiT-S/2 @ 4x32x32, SiT Linear/velocity": "2", "SiT_demo.json, SiT Linear/velocity": "3"}, proc.stdout
    bad = subprocess.run(cmd + ["--real_batch", "0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--real_batch must be >= 1" in bad.stderr


@pytest.mark.skipif(not os.environ.get("BENCH_TORCH_PYTHON"), reason="set BENCH_TORCH_PYTHON to an interpreter with torch + diffusers")
def test_compare_torch_mirror_has_the_same_parameter_count():
    ok, text = bench_common.torch_status(os.environ["BENCH_TORCH_PYTHON"])
    if not ok:
        pytest.skip(f"$BENCH_TORCH_PYTHON cannot import torch/diffusers: {text}")
    proc = subprocess.run([sys.executable, *TINY_ROW, "--compare", "torch"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = [line for line in proc.stdout.splitlines() if line.startswith("| SiT_demo.json")]
    assert len(row) == 1, proc.stdout
    params = re.match(r"\s*([\d.]+) / ([\d.]+)\s*$", row[0].strip("|").split("|")[1])
    assert params and params.group(1) == params.group(2), row[0]
    assert "parameter counts differ" not in proc.stdout


def test_ops_bench_without_torch_prints_an_attention_row(python_without_torch):
    proc = subprocess.run([sys.executable, "bench/bench_ops.py", "--rows", "attention", "--steps", "1", "--warmup", "0",
                           "--compare", "torch", "--torch_python", python_without_torch], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch hidden by tests/test_bench.py" in proc.stdout
    assert any(line.startswith("| attention | matmul softmax") for line in proc.stdout.splitlines()), proc.stdout


def test_ops_bench_demo_step_before_after_and_stock_rows():
    """``--rows demo_ddpm`` prints stock / fast / leave-one-out rows and the swap counts; ``--fast_ops False`` makes a
    bench row run stock paddle and says so."""
    proc = subprocess.run([sys.executable, "bench/bench_ops.py", "--rows", "demo_ddpm", "--steps", "1", "--warmup", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| demo_ddpm |")]
    for label in ("stock paddle (before)", "all fast ops (after, the CPU default)", "all but conv_bias", "layers swapped"):
        assert any(label in line for line in rows), (label, proc.stdout)
    assert "conv_bias 36" in proc.stdout
    proc = subprocess.run([sys.executable, *TINY_ROW, "--fast_ops", "False"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stock paddle (--fast_ops False)" in proc.stdout
    assert re.search(r"^\| SiT_demo\.json", proc.stdout, re.M), proc.stdout
