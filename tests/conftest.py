"""Shared test fixtures: the bundled demo data and helpers to run scripts as a user would."""
import os
import re
import subprocess
import sys

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO_ROOT)

from common.cpu_env import apply_cpu_env  # noqa: E402

apply_cpu_env(verbose=False)  # before any test imports paddle

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo_root():
    """Path of the bundled demo data (built once under data/demo/ if missing)."""
    from common.demo_data import ensure_demo_data

    return ensure_demo_data()


def _run(cmd, cwd, timeout, env, check):
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture
def run_script():
    """``run_script(path, *args, timeout=300, env=None, check=True, cwd=REPO_ROOT)`` runs
    ``python path args...`` (path relative to the repo root) and returns the CompletedProcess;
    on failure (when ``check``) the assertion shows the tail of stdout/stderr."""

    def run(path, *args, timeout=300, env=None, check=True, cwd=REPO_ROOT):
        return _run([sys.executable, os.path.join(REPO_ROOT, path), *map(str, args)], cwd, timeout, env, check)

    return run


@pytest.fixture
def run_shell():
    """``run_shell(launcher, *args, env=None, ...)`` runs ``sh launcher args...`` from the repo root."""

    def run(path, *args, timeout=300, env=None, check=True, cwd=REPO_ROOT):
        return _run(["sh", os.path.join(REPO_ROOT, path), *map(str, args)], cwd, timeout, env, check)

    return run


@pytest.fixture
def launch_2proc(tmp_path):
    """``launch_2proc(path, *args)`` runs a script under ``paddle.distributed.launch`` with 2 CPU
    processes; returns ``(CompletedProcess, log_dir)`` (worker logs in ``log_dir/workerlog.N``)."""

    def run(path, *args, timeout=300, env=None, check=True):
        log_dir = tmp_path / "launch_logs"
        cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(log_dir), os.path.join(REPO_ROOT, path), *map(str, args)]
        try:
            proc = _run(cmd, REPO_ROOT, timeout, env, check=False)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"2-process launch timed out after {timeout}s: {path}")
        if check and proc.returncode != 0:
            logs = "".join(f"\n--- {p.name} ---\n" + p.read_text()[-3000:] for p in sorted(log_dir.glob("workerlog.*")))
            raise AssertionError(f"2-process launch of {path} failed ({proc.returncode}):{logs}\n{proc.stderr[-3000:]}")
        return proc, log_dir

    return run


def rank_checksums(log_dir, world_size=2):
    """``{rank: checksum}`` parsed from the ``[rank N] final weights checksum X`` line that the
    plain-loop train scripts print at the end; fails naming the rank that did not finish."""
    sums = {}
    for rank in range(world_size):
        text = (log_dir / f"workerlog.{rank}").read_text()
        m = re.search(rf"\[rank {rank}\] final weights checksum (\S+)", text)
        assert m, f"rank {rank} did not finish:\n{text[-2000:]}"
        sums[rank] = float(m.group(1))
    return sums
