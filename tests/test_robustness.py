"""Never lose a run (issue 13): atomic Trainer checkpoints, NaN/inf guard, exact mid-epoch resume,
per-rank RNG on resume, resuming an older checkpoint, --save_total_limit, SIGTERM, lock file.

Scripts run at demo size for a few steps: the DiT Trainer (class_conditional) stands for the
three paddlenlp-Trainer examples (they share common/safe_trainer.py), the DDPM loop for the plain
loops (common/checkpoint.py + common/run_guard.py).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import paddle
import pytest

from conftest import REPO_ROOT, rank_checksums

sys.path.insert(0, os.path.join(REPO_ROOT, "ddpm_tutorial"))

import train_unconditional  # noqa: E402
from common import checkpoint as ckpt  # noqa: E402
from common.run_guard import NonFiniteError, OutputDirInUseError, OutputDirLock, TrainingGuard  # noqa: E402

DIT_SCRIPT = os.path.join(REPO_ROOT, "class_conditional", "train_image_generation_trainer.py")
CC_DIR = os.path.dirname(DIT_SCRIPT)  # its sibling modules are imported by plain name
DDPM_SCRIPT = os.path.join(REPO_ROOT, "ddpm_tutorial", "train_unconditional.py")
TINY_DIT = {"model_type": "DiT", "input_size": 8, "patch_size": 2, "in_channels": 4, "hidden_size": 64, "depth": 2,
            "num_heads": 2, "class_dropout_prob": 0.1, "num_classes": 1000, "learn_sigma": True}
TINY_DDPM = ["--resolution", "16", "--block_out_channels", "16", "32", "--attention_levels", "1", "--layers_per_block", "1",
             "--train_batch_size", "8", "--save_images_steps", "0", "--ddpm_num_inference_steps", "2", "--num_sample_images", "2",
             "--logging_steps", "1"]
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def features(tmp_path_factory, demo_root):
    """80 digit latents (8 per class, random VAE) and a tiny DiT config: 5 steps/epoch at batch 16."""
    import importlib.util

    root = tmp_path_factory.mktemp("robust_cc")
    for c in range(10):
        src = os.path.join(demo_root, "digits", str(c))
        (root / "digits" / str(c)).mkdir(parents=True)
        for name in sorted(os.listdir(src))[:8]:
            shutil.copy(os.path.join(src, name), root / "digits" / str(c) / name)
    spec = importlib.util.spec_from_file_location("cc_extract_robust", os.path.join(CC_DIR, "extract_features.py"))
    extract = importlib.util.module_from_spec(spec)
    if CC_DIR not in sys.path:
        sys.path.append(CC_DIR)
    spec.loader.exec_module(extract)
    extract.main(["--data_path", str(root / "digits"), "--feature_path", str(root / "features"), "--image_size", "32",
                  "--vae_name_or_path", "random", "--batch_size", "40"])
    (root / "dit.json").write_text(json.dumps(TINY_DIT))
    return {"features": str(root / "features"), "config": str(root / "dit.json")}


def _dit_args(features, out, max_steps, save_steps, *extra):
    return ["--do_train", "--feature_path", features["features"], "--config_file", features["config"], "--output_dir", str(out),
            "--per_device_train_batch_size", "16", "--dataloader_num_workers", "0", "--learning_rate", "2e-3", "--lr_scheduler_type", "constant",
            "--warmup_steps", "0", "--max_steps", str(max_steps), "--save_steps", str(save_steps), "--logging_steps", "1", "--use_ema", "True",
            "--vae_name_or_path", "random", "--max_grad_norm", "-1", "--disable_tqdm", "True", "--seed", "0", *extra]


def _run(cmd, timeout=240, check=True):
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=dict(os.environ, **ENV), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}")
    return proc


def _run_dit(features, out, max_steps, save_steps, *extra, check=True, prelude=None):
    """Run the DiT Trainer script; ``prelude`` is python code run first in the same process (a hook)."""
    if prelude is None:
        return _run([sys.executable, DIT_SCRIPT, *_dit_args(features, out, max_steps, save_steps, *extra)], check=check)
    code = (f"import os, sys, runpy\nsys.path[:0] = [{CC_DIR!r}, {REPO_ROOT!r}]\nfrom common.cpu_env import apply_cpu_env\napply_cpu_env(verbose=False)\n"
            f"{prelude}\nsys.argv = [{DIT_SCRIPT!r}] + sys.argv[1:]\nrunpy.run_path({DIT_SCRIPT!r}, run_name='__main__')\n")
    return _run([sys.executable, "-c", code, *_dit_args(features, out, max_steps, save_steps, *extra)], check=check)


def _ddpm(demo_root, out, *extra):
    return train_unconditional.main(["--train_data_dir", os.path.join(demo_root, "faces"), "--output_dir", str(out), *TINY_DDPM, *extra])


def _steps(out):
    """Steps of every ``checkpoint-<step>`` folder a user sees in ``out`` (complete or not)."""
    return sorted(int(n.split("-")[1]) for n in os.listdir(out) if re.fullmatch(r"checkpoint-\d+", n) and os.path.isdir(os.path.join(out, n)))


def _assert_same_weights(a, b, name="model_state.pdparams"):
    wa, wb = paddle.load(os.path.join(a, name)), paddle.load(os.path.join(b, name))
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wb[k].numpy(), wa[k].numpy(), rtol=1e-6, atol=1e-7, err_msg=f"{name}: {k}")


def _all_finite(path, name="model_state.pdparams"):
    return all(np.isfinite(v.numpy()).all() for v in paddle.load(os.path.join(path, name)).values())


# ------------------------------------------------------------------ 1. atomic Trainer checkpoints
CRASH_PRELUDE = """
import errno, paddle
_save = paddle.save
def _hooked(obj, path, *a, **k):
    p = str(path)
    if "checkpoint-4" in p and os.path.basename(p).startswith({target!r}):
        {action}
    return _save(obj, path, *a, **k)
paddle.save = _hooked
"""


@pytest.mark.parametrize("target,action", [
    ("ema_state", "os._exit(137)"),  # killed while the EMA callback writes into the checkpoint
    ("optimizer", "raise OSError(errno.ENOSPC, 'No space left on device', p)"),  # disk full mid-save
], ids=["kill_in_ema_write", "disk_full_in_optimizer_write"])
def test_trainer_save_interrupted_leaves_no_broken_checkpoint(features, tmp_path, target, action):
    out = tmp_path / "run"
    proc = _run_dit(features, out, 6, 2, check=False, prelude=CRASH_PRELUDE.format(target=target, action=action))
    assert proc.returncode != 0
    assert _steps(out) == [2], f"a half-written checkpoint-4 is visible: {os.listdir(out)}"
    assert ckpt.resolve_checkpoint("latest", str(out)).endswith("checkpoint-2")
    if target == "optimizer":  # ENOSPC: the temporary folder is removed at once, the space is free again
        assert not [n for n in os.listdir(out) if ".tmp-" in n]
        return
    assert [n for n in os.listdir(out) if n.startswith("checkpoint-4.tmp-")]
    # resume latest: checkpoint-2, the dead process's tmp folder is cleaned, training reaches step 6
    _run_dit(features, out, 6, 2, "--resume_from_checkpoint", "latest")
    assert _steps(out) == [2, 4, 6] and not [n for n in os.listdir(out) if ".tmp-" in n]
    with open(out / "checkpoint-6" / "trainer_state.json") as f:
        assert json.load(f)["global_step"] == 6
    assert os.path.isfile(out / "checkpoint-6" / "ema_state.pdparams")


def test_resume_validation_names_what_is_missing(tmp_path):
    from common.trainer_callbacks import resolve_trainer_checkpoint

    out = tmp_path / "run"
    for step in (2, 4):
        folder = tmp_path / f"tmp{step}"
        folder.mkdir()
        for name in ("trainer_state.json", "optimizer.pdopt", "scheduler.pdparams", "model_state.pdparams"):
            (folder / name).write_text("x" * step)
        out.mkdir(exist_ok=True)
        ckpt.finalize_checkpoint(str(folder), str(out / f"checkpoint-{step}"), step)
    (out / "checkpoint-4" / "trainer_state.json").unlink()  # e.g. killed by an older, non-atomic save
    (out / "checkpoint-6").mkdir()  # a folder without completeness marker (legacy / interrupted)
    (out / "checkpoint-6" / "model_state.pdparams").write_text("x")
    assert resolve_trainer_checkpoint("latest", str(out)).endswith("checkpoint-2")
    with pytest.raises(FileNotFoundError, match="trainer_state.json is missing"):
        resolve_trainer_checkpoint(str(out / "checkpoint-4"), str(out))
    with pytest.raises(FileNotFoundError, match="optimizer.pdopt is missing"):
        resolve_trainer_checkpoint(str(out / "checkpoint-6"), str(out))
    (out / "checkpoint-2" / "optimizer.pdopt").write_text("truncated")
    with pytest.raises(FileNotFoundError, match="optimizer.pdopt has 9 bytes, 2 were written"):
        resolve_trainer_checkpoint(str(out / "checkpoint-2"), str(out))
    assert resolve_trainer_checkpoint("latest", str(out)) is None


def test_stale_tmp_of_dead_process_is_removed_but_not_own_or_alive(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for pid in (dead.pid, os.getpid(), os.getppid()):
        (tmp_path / f"checkpoint-3.tmp-{pid}").mkdir()
    removed = ckpt.clean_stale_tmp(str(tmp_path))
    assert [os.path.basename(p) for p in removed] == [f"checkpoint-3.tmp-{dead.pid}"]
    assert sorted(os.listdir(tmp_path)) == sorted([f"checkpoint-3.tmp-{os.getpid()}", f"checkpoint-3.tmp-{os.getppid()}"])


# ------------------------------------------------------- 3. + 9. mid-epoch resume, --save_total_limit
def test_trainer_mid_epoch_resume_is_exact_and_save_total_limit_holds(features, tmp_path):
    """5 steps per epoch; checkpoint-6 is one step into epoch 1.  One process, --save_total_limit 2:
    only checkpoint-6 and -8 remain; resuming checkpoint-6 to step 8 equals the uninterrupted run."""
    full = tmp_path / "full"
    _run_dit(features, full, 8, 2, "--save_total_limit", "2")
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-6", resumed / "checkpoint-6")
    _run_dit(features, resumed, 8, 2, "--save_total_limit", "2", "--resume_from_checkpoint", "latest")
    for name in ("model_state.pdparams", "dit_ema/model_state.pdparams"):
        _assert_same_weights(str(full / "checkpoint-8"), str(resumed / "checkpoint-8"), name)
    losses = [[h["loss"] for h in json.load(open(d / "checkpoint-8" / "trainer_state.json"))["log_history"] if "loss" in h] for d in (full, resumed)]
    assert losses[1][-2:] == losses[0][-2:]
    assert _steps(full) == [6, 8] and _steps(resumed) == [6, 8]


# ------------------------------------------------------------------------ 2. NaN / inf guard
def test_trainer_nan_stops_nonzero_and_keeps_last_good_checkpoint(features, tmp_path):
    out = tmp_path / "run"
    proc = _run_dit(features, out, 10, 1, "--learning_rate", "1e3", "--save_total_limit", "1", check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "NonFiniteError: non-finite loss or gradient at step" in text, text[-3000:]
    bad = int(text.split("non-finite loss or gradient at step ")[1].split()[0])
    steps = _steps(out)
    assert steps == ([bad - 1] if bad > 1 else []), (steps, bad)
    for step in steps:
        assert not ckpt.checkpoint_problems(str(out / f"checkpoint-{step}"), ("trainer_state.json",))
        assert _all_finite(str(out / f"checkpoint-{step}"))
    assert not os.path.exists(out / "final")


def test_plain_loop_nan_after_resume_keeps_the_good_checkpoint(demo_root, tmp_path):
    out = tmp_path / "run"
    common = ["--checkpointing_steps", "2", "--checkpoints_total_limit", "1", "--lr_scheduler", "constant", "--lr_warmup_steps", "0"]
    _ddpm(demo_root, out, "--max_train_steps", "4", *common)
    good = paddle.load(str(out / "checkpoint-4" / ckpt.STATE_FILE))["model"]
    final_pipeline = os.path.getmtime(out / "model_index.json")
    with pytest.raises(NonFiniteError, match=r"at step \d+ .*Newest complete checkpoint: .*checkpoint-\d+"):
        _ddpm(demo_root, out, "--max_train_steps", "40", "--learning_rate", "1e3", "--resume_from_checkpoint", "latest", *common)
    assert 4 in _steps(out)  # the checkpoint resumed from is never rotated away
    for step in _steps(out):
        model = paddle.load(str(out / f"checkpoint-{step}" / ckpt.STATE_FILE))["model"]
        assert all(np.isfinite(v.numpy()).all() for v in model.values()), step
    again = paddle.load(str(out / "checkpoint-4" / ckpt.STATE_FILE))["model"]
    assert all(np.array_equal(good[k].numpy(), again[k].numpy()) for k in good)
    assert os.path.getmtime(out / "model_index.json") == final_pipeline  # the good pipeline is not overwritten


def test_skip_nan_steps_budget_and_weight_check():
    layer = paddle.nn.Linear(2, 1)
    layer(paddle.ones([1, 2])).sum().backward()
    guard = TrainingGuard(skip_nan_steps=1)
    assert guard.check_step(1, paddle.to_tensor(0.5), layer.parameters())
    assert not guard.check_step(2, float("inf"), layer.parameters())  # skipped, 1 of 1
    with pytest.raises(NonFiniteError, match="at step 3"):
        guard.check_step(3, float("nan"), layer.parameters())
    layer.weight.grad.set_value(paddle.full(layer.weight.shape, float("nan")))
    with pytest.raises(NonFiniteError, match="at step 4"):
        TrainingGuard().check_step(4, 0.1, layer.parameters())  # finite loss, NaN gradient
    with paddle.no_grad():
        layer.bias.set_value(paddle.to_tensor([float("nan")]))
    with pytest.raises(NonFiniteError, match="weights are NaN/inf at step 5"):
        TrainingGuard().check_weights(5, layer.parameters())
    with pytest.raises(ValueError, match="--skip_nan_steps"):
        TrainingGuard(skip_nan_steps=-1)


NAN_ON_RANK1 = """
import os, sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, os.path.join({repo!r}, "ddpm_tutorial"))
from common.cpu_env import apply_cpu_env
apply_cpu_env(verbose=False)
import paddle.nn.functional as F
import train_unconditional
calls, mse = [0], F.mse_loss
def poisoned(a, b, *args, **kw):  # rank 1 alone gets a NaN loss at step 3
    calls[0] += 1
    loss = mse(a, b, *args, **kw)
    return loss * float("nan") if calls[0] == 3 and os.environ.get("PADDLE_TRAINER_ID") == "1" else loss
train_unconditional.F.mse_loss = poisoned
train_unconditional.main(sys.argv[1:])
"""


def test_nan_on_one_rank_stops_both_ranks(launch_2proc, demo_root, tmp_path):
    wrapper = tmp_path / "nan_rank1.py"
    wrapper.write_text(NAN_ON_RANK1.format(repo=REPO_ROOT))
    out = tmp_path / "ddp"
    proc, log_dir = launch_2proc(str(wrapper), "--train_data_dir", os.path.join(demo_root, "faces"), "--output_dir", out,
                                 "--max_train_steps", "6", "--checkpointing_steps", "2", *TINY_DDPM, timeout=200, check=False)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert "NonFiniteError: non-finite loss or gradient at step 3" in (log_dir / f"workerlog.{rank}").read_text(), rank
    assert _steps(out) == [2]


# ------------------------------------------------------------------- 4. two-rank resume (plain loop)
def test_two_process_resume_restores_each_ranks_rng(launch_2proc, demo_root, tmp_path):
    args = ["--train_data_dir", os.path.join(demo_root, "faces"), "--max_train_steps", "5", "--checkpointing_steps", "3",
            "--learning_rate", "2e-3", "--lr_scheduler", "constant", "--lr_warmup_steps", "0", *TINY_DDPM]
    _, log_full = launch_2proc("ddpm_tutorial/train_unconditional.py", *args, "--output_dir", tmp_path / "full", timeout=200)
    full = rank_checksums(log_full)
    rngs = paddle.load(str(tmp_path / "full" / "checkpoint-3" / ckpt.STATE_FILE))["rng"]
    assert isinstance(rngs, list) and len(rngs) == 2  # every rank's state
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    shutil.rmtree(log_full)
    _, log_res = launch_2proc("ddpm_tutorial/train_unconditional.py", *args, "--output_dir", tmp_path / "resumed",
                              "--resume_from_checkpoint", "latest", timeout=200)
    resumed = rank_checksums(log_res)
    assert resumed == full, (resumed, full)  # same noise per rank as the uninterrupted run
    a = paddle.load(str(tmp_path / "full" / "checkpoint-5" / ckpt.STATE_FILE))["model"]
    b = paddle.load(str(tmp_path / "resumed" / "checkpoint-5" / ckpt.STATE_FILE))["model"]
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)


# --------------------------------------------------------------- 5. resuming an older checkpoint
def test_resume_from_older_checkpoint_sets_newer_aside_and_keeps_it(demo_root, tmp_path):
    out = tmp_path / "run"
    common = ["--checkpointing_steps", "2", "--checkpoints_total_limit", "2"]
    _ddpm(demo_root, out, "--max_train_steps", "6", *common)
    assert _steps(out) == [4, 6]
    _ddpm(demo_root, out, "--max_train_steps", "8", "--resume_from_checkpoint", str(out / "checkpoint-4"), "--learning_rate", "1e-3", *common)
    assert _steps(out) == [4, 6, 8]  # 4 = the one resumed from (kept); 6, 8 = the new run
    abandoned = [n for n in os.listdir(out) if n.startswith("abandoned-")]
    assert len(abandoned) == 1 and os.listdir(out / abandoned[0]) == ["checkpoint-6"]
    new6 = paddle.load(str(out / "checkpoint-6" / ckpt.STATE_FILE))
    old6 = paddle.load(str(out / abandoned[0] / "checkpoint-6" / ckpt.STATE_FILE))
    assert new6["args"]["learning_rate"] == 1e-3 and old6["args"]["learning_rate"] != 1e-3
    assert ckpt.resolve_checkpoint("latest", str(out)).endswith("checkpoint-8")


def test_prune_never_deletes_protected_or_newest(tmp_path):
    out = str(tmp_path)
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(out, step, {"step": step}, save_total_limit=0)
    os.makedirs(os.path.join(out, "checkpoint-0"))  # incomplete, older than the newest: removed
    deleted = ckpt.prune_checkpoints(out, 1, protect=[os.path.join(out, "checkpoint-2")])
    assert sorted(map(os.path.basename, deleted)) == ["checkpoint-0", "checkpoint-1", "checkpoint-3"]
    assert _steps(tmp_path) == [2, 4]


# ------------------------------------------------------------------------------- 16. SIGTERM
def _start_and_signal(cmd, pattern, sig=signal.SIGTERM, timeout=180):
    """Start ``cmd``, send ``sig`` once a stderr/stdout line contains ``pattern``; return (rc, output)."""
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=dict(os.environ, **ENV), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, sent = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if pattern in line and not sent.is_set():
                sent.set()
                proc.send_signal(sig)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    assert sent.is_set(), "".join(lines)[-3000:]
    return rc, "".join(lines)


def test_sigterm_saves_a_checkpoint_and_exits_nonzero_plain_loop(demo_root, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, DDPM_SCRIPT, "--train_data_dir", os.path.join(demo_root, "faces"), "--output_dir", str(out), *TINY_DDPM,
           "--max_train_steps", "100000", "--checkpointing_steps", "100000"]
    rc, text = _start_and_signal(cmd, "step 3 loss=")
    assert rc == 128 + signal.SIGTERM, text[-3000:]
    step = int(text.split("stopped by SIGTERM at step ")[1].split(":")[0])
    assert step >= 3 and _steps(out) == [step]
    assert paddle.load(str(out / f"checkpoint-{step}" / ckpt.STATE_FILE))["step"] == step
    assert not os.path.exists(out / ".run.lock")


def test_sigterm_saves_a_checkpoint_and_exits_nonzero_trainer(features, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, DIT_SCRIPT, *_dit_args(features, out, 100000, 100000)]
    rc, text = _start_and_signal(cmd, "global_step: 3,")
    assert rc == 128 + signal.SIGTERM, text[-3000:]
    step = int(text.split("stopped by SIGTERM at step ")[1].split(":")[0])
    assert step >= 3 and _steps(out) == [step]
    folder = out / f"checkpoint-{step}"
    assert not ckpt.checkpoint_problems(str(folder), ()) and os.path.isfile(folder / "ema_state.pdparams")
    with open(folder / "trainer_state.json") as f:
        assert json.load(f)["global_step"] == step
    assert not os.path.exists(out / "final")


# ------------------------------------------------------------------------------- 10. lock file
def test_second_run_into_the_same_output_dir_fails_and_stale_lock_is_taken_over(demo_root, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", f"import sys, time; sys.path.insert(0, {REPO_ROOT!r})\n"
                               f"from common.run_guard import OutputDirLock\nOutputDirLock({str(out)!r}).acquire(); print('locked', flush=True); time.sleep(120)"],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirInUseError, match=rf"--output_dir .* is in use by another training run \(pid {holder.pid} "):
            _ddpm(demo_root, out, "--max_train_steps", "2", "--checkpointing_steps", "2")
        assert _steps(out) == []
    finally:
        holder.kill()
        holder.wait()
    _ddpm(demo_root, out, "--max_train_steps", "2", "--checkpointing_steps", "2")  # the dead holder's lock is stale
    assert _steps(out) == [2] and not os.path.exists(out / ".run.lock")
    with OutputDirLock(out):  # a live run in this very process also counts
        with pytest.raises(OutputDirInUseError):
            OutputDirLock(out).acquire()
