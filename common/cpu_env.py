"""CPU math settings that must be in the environment before paddle is imported.

Paddle's CPU kernels (oneDNN / MKL / OpenMP) read their thread count and CPU dispatch
when the shared libraries load, so every entry script calls :func:`apply_cpu_env` before
``import paddle``.  Measured on the 2-core machines this project is developed on
(1024x1024 fp32 matmul):

* Intel Xeon: ``OMP_NUM_THREADS`` = cores lifts 125 -> 230 GFLOP/s; ``MKL_DEBUG_CPU_TYPE=5``
  *halves* it (230 -> 132), so it is never set on Intel.
* AMD EPYC: threads + ``MKL_DEBUG_CPU_TYPE=5`` (use the AVX2 code path that MKL otherwise
  reserves for Intel) lift 35 -> 144 GFLOP/s.

Values the user already exported are never overwritten.
"""
import os
import sys

__all__ = ["cpu_vendor", "available_cores", "cpu_env_settings", "apply_cpu_env"]


def cpu_vendor(cpuinfo_path="/proc/cpuinfo"):
    """Return ``"intel"``, ``"amd"`` or ``"unknown"`` from the ``vendor_id`` line of ``cpuinfo_path``.

    Never raises: an unreadable file gives ``"unknown"``.
    """
    try:
        with open(cpuinfo_path, "r", errors="ignore") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    value = line.split(":", 1)[1].strip()
                    if value == "GenuineIntel":
                        return "intel"
                    if value == "AuthenticAMD":
                        return "amd"
                    return "unknown"
    except OSError:
        pass
    return "unknown"


def available_cores():
    """Number of cores this process may run on (respects taskset / cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # non-Linux
        return os.cpu_count() or 1


def _local_world_size(environ):
    # paddle.distributed.launch starts one process per device on this node and exports
    # PADDLE_LOCAL_SIZE; sharing the cores between them avoids oversubscription.
    for key in ("PADDLE_LOCAL_SIZE", "PADDLE_TRAINERS_NUM"):
        try:
            return max(1, int(environ[key]))
        except (KeyError, ValueError):
            continue
    return 1


def cpu_env_settings(environ=None, cpuinfo_path="/proc/cpuinfo", cores=None):
    """Compute the variables to set, without touching the environment.

    Args:
        environ: mapping to read existing values from (default ``os.environ``).
        cpuinfo_path: where to read the CPU vendor (tests pass a fake file).
        cores: core count override (default :func:`available_cores`).

    Returns:
        ``(to_set, reasons)``: a dict of variables that are missing from ``environ`` and
        should be set, and a list of human-readable reasons, one per decision.
    """
    environ = os.environ if environ is None else environ
    cores = available_cores() if cores is None else cores
    to_set, reasons = {}, []
    if "OMP_NUM_THREADS" in environ:
        reasons.append(f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS']} kept (set by user)")
    else:
        threads = max(1, cores // _local_world_size(environ))
        to_set["OMP_NUM_THREADS"] = str(threads)
        reasons.append(f"OMP_NUM_THREADS={threads} ({cores} cores / {_local_world_size(environ)} local processes)")
    vendor = cpu_vendor(cpuinfo_path)
    if "MKL_DEBUG_CPU_TYPE" in environ:
        reasons.append(f"MKL_DEBUG_CPU_TYPE={environ['MKL_DEBUG_CPU_TYPE']} kept (set by user)")
    elif vendor == "amd":
        to_set["MKL_DEBUG_CPU_TYPE"] = "5"
        reasons.append("MKL_DEBUG_CPU_TYPE=5 (AMD CPU: use MKL's AVX2 path)")
    else:
        reasons.append(f"MKL_DEBUG_CPU_TYPE not set ({vendor} CPU: it would slow MKL down)")
    return to_set, reasons


def apply_cpu_env(verbose=True):
    """Set the CPU math variables in ``os.environ`` (only those the user has not set).

    Must run before ``import paddle``; if paddle is already imported a warning is printed
    because the values can no longer take effect.  Returns the dict that was set.
    """
    to_set, reasons = cpu_env_settings()
    if "paddle" in sys.modules and to_set:
        print("[cpu_env] warning: paddle already imported; CPU settings may not take effect", file=sys.stderr)
    os.environ.update(to_set)
    if verbose and os.environ.get("PADDLE_TRAINER_ID", "0") == "0":
        print("[cpu_env] " + "; ".join(reasons), file=sys.stderr)
    return to_set
