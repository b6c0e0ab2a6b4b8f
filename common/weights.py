"""Reading weight files of the field and loading them into a model without silent mis-loads.

:func:`read_state_dict` reads ``{name: float32 numpy array}`` from

* ``.safetensors`` (any float dtype; bf16/fp16 are cast to float32; no torch needed),
* ``.npz`` (arrays keyed by name), ``.pdparams`` (a paddle state dict),
* ``.pt`` / ``.pth`` / ``.ckpt`` / ``.bin`` -- PyTorch pickles. They need ``torch`` (not a
  dependency of this project: ``pip install torch``, or convert to ``.safetensors`` elsewhere).
  A pickle can run code when loaded, so it is opened with ``torch.load(weights_only=True)``;
  PyTorch-Lightning 1.x checkpoints (``.ckpt`` with pickled callback classes) fail that, and are
  then read again weights-only with inert placeholders registered for exactly the
  ``pytorch_lightning.*`` / ``lightning*`` / ``omegaconf.*`` / ``pathlib.*`` classes they name;
  a pickle that names any other class is refused with the class names.

:func:`load_state_dict_strict` sets a state dict into a paddle model and raises on missing,
unexpected or mis-shaped keys (all listed), unless a partial load was asked for, which is then
logged with the count of loaded tensors and the names that kept their initial values.
"""
import json
import os
import pickle
import struct

import numpy as np

from common.logging_utils import get_logger

__all__ = ["read_state_dict", "unwrap_state_dict", "load_state_dict_strict", "TORCH_EXTENSIONS"]

logger = get_logger("weights")
TORCH_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")
_SAFE_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _read_safetensors(path):
    """Parse a .safetensors file with numpy only (the ``safetensors`` numpy backend has no bf16)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path!r} is not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path!r} is not a safetensors file (bad header: {e})") from None
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        buf = data[begin:end]
        if info["dtype"] == "BF16":  # bf16 is the top half of a float32
            arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _SAFE_DTYPES:
            arr = np.frombuffer(buf, dtype=np.dtype(_SAFE_DTYPES[info["dtype"]]).newbyteorder("<"))
        else:
            raise ValueError(f"{path!r}: tensor {name!r} has dtype {info['dtype']}, which this reader does not know")
        out[name] = arr.reshape(info["shape"])
    return out


class _Placeholder:
    """Stands in for a pickled PyTorch-Lightning (or omegaconf/pathlib) object; holds its state."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state


_PLACEHOLDER_ROOTS = ("pytorch_lightning", "lightning", "lightning_fabric", "omegaconf", "pathlib")


def _torch_load_with_placeholders(torch, path, arg_name):
    """``torch.load(weights_only=True)`` where the only non-weights classes in the pickle are
    Lightning-side ones: those become inert :class:`_Placeholder` subclasses registered as safe
    globals for this one load; torch's weights-only unpickler still checks everything else.

    Raises:
        pickle.UnpicklingError: the pickle needs any other class (they are listed).
    """
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    refused = [g for g in unsafe if g.split(".")[0] not in _PLACEHOLDER_ROOTS]
    if refused:
        raise pickle.UnpicklingError(f"{arg_name} {path!r}: refusing to unpickle classes {refused[:8]}: only weights, and "
                                     f"placeholders for {'/'.join(_PLACEHOLDER_ROOTS)} objects, are read from a pickle")
    placeholders = []
    for g in unsafe:
        module, _, name = g.rpartition(".")
        placeholders.append(type(name, (_Placeholder,), {"__module__": module, "__qualname__": name}))
    logger.info("%s: reading past %d Lightning-side pickled objects as placeholders: %s", path, len(unsafe), unsafe[:4])
    with torch.serialization.safe_globals(placeholders):
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_torch(path, arg_name):
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{arg_name} {path!r} is a PyTorch pickle and reading it needs torch, which is not installed here "
            "(it is not a dependency of this project). Install it (`pip install torch`), or convert the file to "
            ".safetensors / .npz on a machine that has torch."
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # e.g. a Lightning 1.x .ckpt with pickled callback classes
        obj = _torch_load_with_placeholders(torch, path, arg_name)

    def to_np(v):
        return v.detach().float().numpy() if v.is_floating_point() else v.detach().numpy()

    def walk(o):
        if isinstance(o, torch.Tensor):
            return to_np(o)
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items() if isinstance(v, (dict, torch.Tensor))}
        return None

    return walk(obj)


def unwrap_state_dict(obj, keys=("state_dict", "model", "module")):
    """The flat ``{name: array}`` inside a checkpoint dict: follows the first of ``keys`` whose value
    is a dict of arrays (e.g. Lightning's ``state_dict``, DiT ``train.py``'s ``model``)."""
    while isinstance(obj, dict):
        nested = next((obj[k] for k in keys if isinstance(obj.get(k), dict)), None)
        if nested is None:
            break
        obj = nested
    return obj


def read_state_dict(path, arg_name="--checkpoint_path"):
    """Read a weight file into a dict of numpy arrays (float tensors as float32).

    Returns the file's top-level mapping: for a plain state dict ``{name: array}``; for a
    training checkpoint the nested dicts are kept (``{"model": {...}, "ema": {...}}``), so the
    caller picks one (see :func:`unwrap_state_dict`).

    Raises:
        FileNotFoundError: ``path`` does not exist (named with ``arg_name``).
        ImportError: a PyTorch pickle without torch installed (says how to get around it).
        ValueError: an unknown extension or a malformed file.
        pickle.UnpicklingError: a pickle that needs a class outside the allow-list.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{arg_name} {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        state = _read_safetensors(path)
    elif ext == ".npz":
        with np.load(path, allow_pickle=False) as data:
            state = {k: data[k] for k in data.files}
    elif ext == ".pdparams":
        import paddle

        def walk(o):
            if hasattr(o, "numpy"):
                return o.numpy()
            if isinstance(o, np.ndarray):
                return o
            if isinstance(o, dict):
                return {k: walk(v) for k, v in o.items() if hasattr(v, "numpy") or isinstance(v, (dict, np.ndarray))}
            return None

        state = walk(paddle.load(path))
    elif ext in TORCH_EXTENSIONS:
        state = _read_torch(path, arg_name)
    else:
        raise ValueError(f"{arg_name} {path!r}: unknown extension {ext!r}; expected .safetensors, .npz, .pdparams "
                         f"or a PyTorch pickle ({', '.join(TORCH_EXTENSIONS)})")

    def as_f32(o):
        if isinstance(o, dict):
            return {k: as_f32(v) for k, v in o.items()}
        return o.astype(np.float32) if np.issubdtype(o.dtype, np.floating) else o

    return as_f32(state)


def load_state_dict_strict(model, state_dict, source, allow_missing=(), allow_partial=False):
    """Set ``state_dict`` (``{name: array or tensor}``) into paddle ``model``, checking every key.

    Args:
        model: a ``paddle.nn.Layer``.
        state_dict: weights under the model's own parameter names.
        source: what the weights came from (a path), for the messages.
        allow_missing: name prefixes that may be absent (they keep their initial values).
        allow_partial: accept any missing/unexpected keys (a warm start); shapes must still match.

    Returns:
        ``(loaded, kept)``: the number of tensors loaded and the sorted names left as initialised.

    Raises:
        ValueError: missing, unexpected or mis-shaped keys (each list in the message), unless allowed.
    """
    import paddle

    own = model.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    wrong = sorted(f"{k}: {tuple(np.shape(state_dict[k]))} vs model {tuple(own[k].shape)}" for k in own
                   if k in state_dict and tuple(np.shape(state_dict[k])) != tuple(own[k].shape))
    really_missing = [k for k in missing if not k.startswith(tuple(allow_missing))] if allow_missing else missing
    if wrong or (not allow_partial and (really_missing or unexpected)):
        raise ValueError(f"{source}: weights do not fit {type(model).__name__}: {len(really_missing)} missing {really_missing[:8]}, "
                         f"{len(unexpected)} unexpected {unexpected[:8]}, {len(wrong)} wrong shapes {wrong[:8]}")
    usable = {k: paddle.to_tensor(np.asarray(v)) if not isinstance(v, paddle.Tensor) else v for k, v in state_dict.items() if k in own}
    model.set_state_dict(usable)
    if missing or unexpected:
        logger.warning("%s: partial load into %s: %d tensors loaded, %d kept their initial values %s, %d ignored %s",
                       source, type(model).__name__, len(usable), len(missing), missing[:8], len(unexpected), unexpected[:8])
    return len(usable), missing
