"""The harness every ``bench/bench_*.py`` uses: one subprocess per row, step timing, peak RSS,
the optional PyTorch comparison (``--compare torch``) and the table.

Protocol.  A bench script's parent process calls :func:`run_rows` with the row names.  Each row
runs as ``python <script> --child <row>``: the child builds the Paddle model, times it with
:func:`time_steps` and prints one line ``BENCH {json}`` (:func:`emit`); so peak RSS is that row's
own.  A row that has a PyTorch mirror puts a ``"torch"`` spec in its result (the model configs read
back from the Paddle model, the batch, the step count); with ``--compare torch`` the parent then
runs ``<torch python> bench/torch_mirrors.py <spec>`` right after it (Paddle and PyTorch rows
interleave, so a change in machine load hits both) and prints ms/step of both, the ratio
Paddle / PyTorch and both peak RSS.

PyTorch never goes into ``requirements*.txt``.  ``--torch_python`` (or ``$BENCH_TORCH_PYTHON``)
names an interpreter that has ``torch`` and ``diffusers`` (e.g. a separate venv); by default the
current one.  When it cannot import them, ``--compare torch`` prints how to install them and the
Paddle rows run alone (exit status 0).

This module imports neither paddle nor torch at load time; children import what they need.
"""
import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
TORCH_MIRRORS = os.path.join(BENCH_DIR, "torch_mirrors.py")
RESULT_PREFIX = "BENCH "

TORCH_INSTALL_HINT = (
    "--compare torch needs torch and diffusers (and transformers for the Stable Diffusion rows), which this "
    "project does not install (they are in no requirements file). Either in this environment: "
    "`pip install torch diffusers transformers`, or in a separate venv (the PyTorch rows import no paddle): "
    "`python3 -m venv /tmp/torch_venv && /tmp/torch_venv/bin/pip install torch diffusers transformers`, then pass "
    "`--torch_python /tmp/torch_venv/bin/python` (or export BENCH_TORCH_PYTHON). Running the Paddle rows alone."
)


def add_bench_arguments(parser):
    """Add the flags every bench script shares to an ``argparse`` parser.

    ``--compare torch``, ``--torch_python PATH``, ``--repeats N`` (each row pair run N times,
    interleaved; the table shows the median), ``--timeout S`` (per row) and the hidden
    ``--child ROW`` of the row subprocesses.
    """
    parser.add_argument("--compare", choices=["torch"], default=None,
                        help="also time the identical config in PyTorch + diffusers (rows that have a mirror)")
    parser.add_argument("--torch_python", default=os.environ.get("BENCH_TORCH_PYTHON", sys.executable),
                        help="interpreter with torch + diffusers for --compare torch (default: $BENCH_TORCH_PYTHON or this one)")
    parser.add_argument("--repeats", type=int, default=1, help="run every row (and its PyTorch mirror) this many times, interleaved")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per row subprocess")
    parser.add_argument("--fast_ops", type=_parse_bool, default=True, metavar="{True,False}",
                        help="Paddle rows with common.fast_ops applied as the scripts do on CPU (True, default) or stock paddle (False)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser


def add_real_batch_argument(parser, rows):
    """Add ``--real_batch N`` to a bench script with real-config rows (``rows``: their names, for the help):
    their batch instead of the row's small CPU default, e.g. the largest that fits the machine's RAM.  The
    children read it through :func:`real_batch`; :func:`check_bench_arguments` range-checks it."""
    parser.add_argument("--real_batch", type=int, default=None,
                        help=f"batch of the real-config rows ({rows}) instead of their small CPU default; demo rows keep theirs")
    return parser


def _parse_bool(value):
    from common.fast_ops import parse_bool  # no paddle import

    return parse_bool(value)


FAST_OPS_ENV = "BENCH_FAST_OPS"
REAL_BATCH_ENV = "BENCH_REAL_BATCH"


def real_batch(default):
    """In a row child: the batch of a real-config row, ``--real_batch`` of the parent (``$BENCH_REAL_BATCH``)
    or the row's own ``default`` (its small CPU batch).  Returns an int >= 1."""
    value = os.environ.get(REAL_BATCH_ENV, "")
    return int(value) if value else default


def bench_fast_ops(model):
    """In a Paddle row child: apply ``common.fast_ops`` to ``model`` (a layer or a pipeline) as the training and
    sampling scripts do by default, unless the parent ran with ``--fast_ops False`` (``$BENCH_FAST_OPS=0``).

    Returns:
        the :func:`common.fast_ops.apply_fast_ops` state dict.
    """
    from common.fast_ops import apply_fast_ops

    return apply_fast_ops(model, os.environ.get(FAST_OPS_ENV, "1") == "1")


def check_bench_arguments(parser, args):
    """Range-check the shared flags (``parser.error`` exits 2 naming the flag)."""
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0, got {args.timeout}")
    if getattr(args, "real_batch", None) is not None and args.real_batch < 1:
        parser.error(f"--real_batch must be >= 1, got {args.real_batch}")


def torch_status(python):
    """Whether ``python`` can import torch and diffusers.

    Args:
        python: path of the interpreter to ask (run as a subprocess, so this process never imports torch).

    Returns:
        ``(ok, text)``: ``text`` is ``"torch X, diffusers Y"`` when ``ok``, else the import error.
    """
    code = "import torch, diffusers; print('torch', torch.__version__ + ', diffusers', diffusers.__version__)"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{python}: {type(e).__name__}: {e}"
    if out.returncode:
        lines = out.stderr.strip().splitlines()
        return False, lines[-1] if lines else f"exit status {out.returncode}"
    return True, out.stdout.strip()


def time_steps(step, warmup, steps):
    """Time ``step()`` (one full training step that returns after its results are ready).

    Args:
        step: callable without arguments; it must synchronise (e.g. ``float(loss)``) so the wall time is the step's.
        warmup: untimed calls first (>= 0).
        steps: timed calls (>= 1).

    Returns:
        dict ``ms_per_step`` (median of the timed calls), ``ms_mean``, ``ms_min`` (floats, milliseconds).

    Raises:
        ValueError: ``warmup < 0`` or ``steps < 1``.
    """
    if warmup < 0 or steps < 1:
        raise ValueError(f"need warmup >= 0 and steps >= 1, got warmup={warmup}, steps={steps}")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(1000.0 * (time.perf_counter() - t0))
    return {"ms_per_step": statistics.median(times), "ms_mean": statistics.fmean(times), "ms_min": min(times)}


def config_dict(config):
    """A model config (ppdiffusers ``FrozenDict``, paddlenlp config ``to_dict()``, plain dict) as plain
    JSON data without the ``_``-prefixed bookkeeping keys, to hand to the PyTorch mirror."""
    return json.loads(json.dumps({k: v for k, v in dict(config).items() if not str(k).startswith("_")}, default=list))


def peak_rss_mb():
    """This process's peak resident set size in MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(result):
    """Print a child's result line (adds ``peak_rss_mb``); the parent parses the last such line."""
    result = dict(result, peak_rss_mb=peak_rss_mb())
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _parse(proc_out, returncode, stderr):
    lines = [line for line in proc_out.splitlines() if line.startswith(RESULT_PREFIX)]
    if returncode == 0 and lines:
        return json.loads(lines[-1][len(RESULT_PREFIX):])
    if returncode is not None and returncode < 0:  # killed: the OOM killer sends SIGKILL
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        return {"error": f"killed by {name}" + (" (out of memory? see dmesg; try a smaller --real_batch)" if name == "SIGKILL" else "")}
    err = [line for line in stderr.strip().splitlines()
           if line.strip() and "Warning: " not in line and not line.strip().startswith("warnings.warn(")]  # skip python warnings
    return {"error": err[-1][-300:] if err else f"exit status {returncode}"}


def run_child(cmd, timeout):
    """Run one row subprocess from the repo root and return its result dict (``{"error": ...}`` on failure)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    return _parse(out.stdout, out.returncode, out.stderr)


def load_text():
    """``"load a/b/c"``: the 1/5/15-minute load averages, to label timings taken on a shared machine."""
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def _median(results, key):
    vals = [r[key] for r in results if isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def _fmt(x, spec):
    return "-" if x is None or x != x else format(x, spec)


def print_table(pairs, compare):
    """Print the markdown table of ``[(name, paddle_results, torch_results_or_None), ...]``.

    Columns: row, parameters (Paddle / PyTorch, millions; must agree for a fair row), batch,
    ms/step and images/s of each framework (median over repeats), the ratio Paddle / PyTorch, peak RSS.
    """
    head = "| row | params (M) P / T | batch | Paddle ms/step | PyTorch ms/step | ratio P/T | Paddle img/s | PyTorch img/s | RSS MiB P / T |"
    if not compare:
        head = "| row | params (M) | batch | ms/step | img/s | peak RSS MiB |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    notes = []
    for name, pres, tres in pairs:
        ok = [r for r in pres if "error" not in r]
        if not ok:
            print(f"| {name} | failed: {pres[-1]['error']} |" + " |" * (head.count("|") - 3))
            continue
        p = ok[0]
        label = p.get("row", name)
        pms, pips, prss = _median(ok, "ms_per_step"), _median(ok, "images_per_s"), _median(ok, "peak_rss_mb")
        pparams = p.get("params")
        if not compare:
            print(f"| {label} | {_fmt(pparams and pparams / 1e6, '.2f')} | {p.get('batch', '-')} | {_fmt(pms, '.1f')} | {_fmt(pips, '.1f')} | {_fmt(prss, '.0f')} |")
            continue
        tok = [r for r in (tres or []) if "error" not in r]
        if tres is None:
            tms = tips = trss = tparams = None
            if p.get("torch_note"):
                notes.append(f"{label}: no PyTorch row ({p['torch_note']})")
        elif not tok:
            tms = tips = trss = tparams = None
            notes.append(f"{label}: PyTorch row failed: {tres[-1]['error']}")
        else:
            tms, tips, trss = _median(tok, "ms_per_step"), _median(tok, "images_per_s"), _median(tok, "peak_rss_mb")
            tparams = tok[0].get("params")
            if tparams != pparams:
                notes.append(f"{label}: parameter counts differ (Paddle {pparams}, PyTorch {tparams}): not the identical model")
            if tok[0].get("params_other") != p.get("params_other"):
                notes.append(f"{label}: parameter counts of the other parts (frozen encoders / discriminator) differ "
                             f"(Paddle {p.get('params_other')}, PyTorch {tok[0].get('params_other')})")
        ratio = pms / tms if pms and tms else None
        print(f"| {label} | {_fmt(pparams and pparams / 1e6, '.2f')} / {_fmt(tparams and tparams / 1e6, '.2f')} | {p.get('batch', '-')} "
              f"| {_fmt(pms, '.1f')} | {_fmt(tms, '.1f')} | {_fmt(ratio, '.2f')} | {_fmt(pips, '.1f')} | {_fmt(tips, '.1f')} "
              f"| {_fmt(prss, '.0f')} / {_fmt(trss, '.0f')} |")
    for note in notes:
        print(f"note: {note}")


def run_rows(script, names, args, child_args=()):
    """Run every row of ``script`` in its own subprocess (and its PyTorch mirror with ``--compare torch``) and print the table.

    Args:
        script: the bench script's ``__file__``; rows run as ``python script --child NAME *child_args``.
        names: row names, in order.
        args: parsed arguments holding the :func:`add_bench_arguments` flags.
        child_args: extra command-line arguments for the Paddle children (e.g. ``["--steps", "5"]``).

    Returns:
        ``[(name, paddle_results, torch_results_or_None), ...]`` (one result dict per repeat).
    """
    from common.cpu_env import apply_cpu_env, cpu_env_settings, cpu_vendor  # no paddle import

    reasons = cpu_env_settings()[1]
    apply_cpu_env(verbose=False)  # the children (Paddle and PyTorch alike) inherit the same thread settings
    os.environ[FAST_OPS_ENV] = "1" if getattr(args, "fast_ops", True) else "0"  # the Paddle children read it (bench_fast_ops)
    os.environ[REAL_BATCH_ENV] = str(args.real_batch) if getattr(args, "real_batch", None) else ""  # and this (real_batch)
    compare = args.compare == "torch"
    torch_ok = False
    if compare:
        torch_ok, status = torch_status(args.torch_python)
        if torch_ok:
            print(f"compare: {status} ({args.torch_python})")
        else:
            print(f"compare: torch not importable by {args.torch_python}: {status}")
            print(TORCH_INSTALL_HINT)
    print(f"cpu: {cpu_vendor()} x {os.cpu_count()} cores; {'; '.join(reasons)}; "
          f"Paddle rows {'with common.fast_ops (the CPU default)' if os.environ[FAST_OPS_ENV] == '1' else 'stock paddle (--fast_ops False)'}; {load_text()} at start")
    pairs = []
    for name in names:
        pres, tres = [], None
        for _ in range(args.repeats):
            r = run_child([sys.executable, script, "--child", name, *map(str, child_args)], args.timeout)
            pres.append(r)
            spec = r.get("torch")
            if compare and torch_ok and spec:
                tres = tres or []
                tres.append(run_child([args.torch_python, TORCH_MIRRORS, json.dumps(spec)], args.timeout))
        pairs.append((name, pres, tres))
    print_table(pairs, compare and torch_ok)
    print(f"{load_text()} at end; each row its own process; ms/step = median of the timed steps"
          + (f", median over {args.repeats} interleaved repeats" if args.repeats > 1 else ""))
    return pairs
