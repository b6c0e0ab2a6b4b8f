"""Range checks for command-line arguments and config-file reading that names the file.

Every training / extraction script validates its numeric arguments right after parsing, before
any data, model or output folder is touched, so nonsense (``--checkpointing_steps 0``,
``--max_steps -1``, ``--learning_rate -1``, ``--resolution 30`` with an f8 VAE) is refused at
once with a message naming the flag, the value and what was expected, e.g.
``--checkpointing_steps must be > 0, got 0``, instead of a ``ZeroDivisionError`` mid-run or an
exit 0 without training.

The checks raise ``ValueError``.  ``argparse`` scripts wrap them in :func:`usage_errors` so the
exit is a clean usage error (status 2, the message on stderr); ``PdArgumentParser`` scripts let
the ``ValueError`` propagate.  Arguments are read from a namespace / dataclass by attribute name
and reported as ``--<name>``; ``None`` (an unset optional argument) passes every check.

:func:`read_json_config` reads a JSON config and names the file (and the line/column) when it
is missing or malformed; :func:`check_trainer_arguments` covers paddlenlp's ``TrainingArguments``.
"""
import contextlib
import json
import math
import numbers
import os

__all__ = [
    "require_positive", "require_non_negative", "require_range", "require_divisible", "require_vae_multiple",
    "read_json_config", "check_trainer_arguments", "usage_errors",
]


def _values(ns, name):
    """``(flag, [values])`` of attribute ``name`` (a list/tuple argument gives all its items)."""
    value = getattr(ns, name)
    if value is None:
        return f"--{name}", []
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"--{name}: expected a number, got {v!r}")
    return f"--{name}", items


def _shown(ns, name):
    value = getattr(ns, name)
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def require_positive(ns, *names):
    """Require every argument ``names`` of ``ns`` (each item of a list argument) to be > 0.

    Raises:
        ValueError: ``"--<name> must be > 0, got <value>"`` for the first one that is not.
    """
    for name in names:
        flag, items = _values(ns, name)
        if any(not v > 0 for v in items):  # also catches NaN
            raise ValueError(f"{flag} must be > 0, got {_shown(ns, name)}")


def require_non_negative(ns, *names):
    """Require every argument ``names`` of ``ns`` (each item of a list argument) to be >= 0.

    Raises:
        ValueError: ``"--<name> must be >= 0, got <value>"`` for the first one that is not.
    """
    for name in names:
        flag, items = _values(ns, name)
        if any(not v >= 0 for v in items):
            raise ValueError(f"{flag} must be >= 0, got {_shown(ns, name)}")


def require_range(ns, name, low=None, high=None, low_inclusive=True, high_inclusive=True):
    """Require argument ``name`` of ``ns`` to lie in the interval from ``low`` to ``high``
    (either bound may be ``None``; bounds included unless ``*_inclusive`` is False).

    Raises:
        ValueError: e.g. ``"--ema_decay must be in [0, 1], got 1.5"``.
    """
    flag, items = _values(ns, name)
    for v in items:
        ok = not math.isnan(v)
        if low is not None:
            ok = ok and (v >= low if low_inclusive else v > low)
        if high is not None:
            ok = ok and (v <= high if high_inclusive else v < high)
        if not ok:
            left = "-inf" if low is None else low
            right = "inf" if high is None else high
            interval = f"{'[' if low_inclusive and low is not None else '('}{left}, {right}{']' if high_inclusive and high is not None else ')'}"
            raise ValueError(f"{flag} must be in {interval}, got {_shown(ns, name)}")


def require_divisible(value, factor, name, why):
    """Require ``value`` (the value of option ``name``, e.g. ``"--resolution"``) to be a positive
    multiple of ``factor``; ``why`` says where the factor comes from.

    Raises:
        ValueError: ``"--resolution must be a positive multiple of 8 (<why>), got 30"``.
    """
    if value is None:
        return
    if not value > 0 or value % factor:
        raise ValueError(f"{name} must be a positive multiple of {factor} ({why}), got {value}")


def require_vae_multiple(value, vae_name_or_path, name="--resolution"):
    """Require an image side ``value`` to be divisible by the downsampling factor of the VAE
    ``vae_name_or_path`` (see :func:`common.vae.vae_downsampling_factor`), so the latents have a
    whole number of pixels (``--resolution 30`` with an f8 VAE would give 3.75).

    Returns the factor.

    Raises:
        ValueError: not a multiple (the message names the factor and where it comes from), or
            the VAE's config file is malformed (named).
    """
    from common.vae import vae_downsampling_factor

    factor, source = vae_downsampling_factor(vae_name_or_path)
    require_divisible(value, factor, name, f"the downsampling factor of the VAE {source}")
    return factor


def read_json_config(path, arg_name, require_object=True):
    """Read the JSON config file ``path`` given by option ``arg_name`` (e.g. ``"--config_file"``).

    Returns the parsed JSON (a dict when ``require_object``).

    Raises:
        FileNotFoundError: ``"<arg_name> '<path>' does not exist"``.
        ValueError: not UTF-8, not valid JSON (``"<arg_name> '<path>' is not valid JSON: line 3
            col 5: Expecting ',' delimiter"``) or, with ``require_object``, not a JSON object.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{arg_name} {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{arg_name} {path!r} is not UTF-8 text: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{arg_name} {path!r} is not valid JSON: line {e.lineno} col {e.colno}: {e.msg}") from None
    if require_object and not isinstance(data, dict):
        raise ValueError(f"{arg_name} {path!r} must hold a JSON object, got a JSON {type(data).__name__}")
    return data


def check_trainer_arguments(args):
    """Range-check the paddlenlp ``TrainingArguments`` the Trainer examples use.

    The examples are step-based: ``--max_steps`` must be > 0.  paddlenlp's default
    ``--max_steps -1`` ("train ``--num_train_epochs`` epochs instead") is accepted only together
    with ``--do_train`` and ``--num_train_epochs > 0`` (without ``--do_train`` the scripts would not
    train at all).  Also ``--learning_rate``, ``--per_device_train_batch_size`` and
    ``--gradient_accumulation_steps`` > 0, ``--logging_steps`` / ``--save_steps`` > 0 when the
    logging / save strategy is ``steps``, ``--warmup_steps`` and ``--dataloader_num_workers`` >= 0,
    ``--warmup_ratio`` in [0, 1] and ``--weight_decay`` >= 0.

    Raises:
        ValueError: the first argument out of range, e.g. ``"--max_steps must be > 0 (or -1 with
            --do_train and --num_train_epochs > 0), got -5"``.
    """
    if args.max_steps == -1:
        if not args.num_train_epochs > 0:
            raise ValueError(f"--max_steps -1 (paddlenlp's default: train --num_train_epochs epochs) needs --num_train_epochs > 0, got {args.num_train_epochs}")
        if not args.do_train:
            raise ValueError("nothing to train: --max_steps is -1 (paddlenlp's default) and --do_train is not given; "
                             "pass --max_steps N (> 0), or --do_train to train --num_train_epochs epochs")
    elif args.max_steps <= 0:
        raise ValueError(f"--max_steps must be > 0 (or -1 with --do_train and --num_train_epochs > 0), got {args.max_steps}")
    require_positive(args, "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps")
    if str(getattr(args.logging_strategy, "value", args.logging_strategy)) == "steps":
        require_positive(args, "logging_steps")
    if str(getattr(args.save_strategy, "value", args.save_strategy)) == "steps":
        require_positive(args, "save_steps")
    require_non_negative(args, "warmup_steps", "dataloader_num_workers", "weight_decay")
    require_range(args, "warmup_ratio", 0, 1)


@contextlib.contextmanager
def usage_errors(parser):
    """Turn a ``ValueError`` / ``FileNotFoundError`` raised by the checks inside the ``with``
    block into ``parser.error(message)``: the usage line and the message on stderr, exit 2."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
