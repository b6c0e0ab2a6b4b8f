"""The fastest Paddle path for the hot ops of this project's models on CPU (issue 17 item 2).

:func:`apply_fast_ops` takes a built model (a ppdiffusers ``ModelMixin``, the project's DiT, a
pipeline's parts) and swaps slow paths for faster ones with the same parameters, the same
``state_dict`` keys and the same numbers up to float rounding, so checkpoints and
``save_pretrained`` folders stay what plain ppdiffusers writes and loads.  Every swap is
per layer (an instance attribute ``forward`` that shadows the class method, or the official
``Attention.set_processor``); nothing in paddle or ppdiffusers is patched globally, and
:func:`remove_fast_ops` undoes the layer swaps.  What each swap does and why (measured with
``OMP_NUM_THREADS=1`` on a 2-core AMD EPYC, paddle 3.3.1; ``bench/bench_ops.py`` has the numbers
and ``bench/README.md`` the tables):

``stride_kernel_off`` (process-wide, :func:`apply_fast_cpu_flags`)
    ``paddle.set_flags({"FLAGS_use_stride_kernel": False})``.  With stride kernels on (paddle's
    default) ``transpose`` / ``chunk`` / slicing return strided views, and paddle's CPU
    elementwise and matmul kernels on a non-contiguous input are very slow: at U-ViT's attention
    shape (B64 L25 H4 D32) ``q * scale`` on the transposed view takes 1.66 ms against 0.02 ms
    contiguous, and ``matmul(q, k^T)`` 3.5 ms against 0.2 ms.  Off, those ops copy once with the
    fast transpose kernel: U-ViT demo step 423 -> 303 ms, DiT 107 -> 83 ms, SD 398 -> 350 ms.
    It is a process flag (it also speeds up the VAE / text encoder running next to the model).

``conv_bias`` (``nn.Conv2D`` and ppdiffusers' ``LoRACompatibleConv``, NCHW, ``padding_mode="zeros"``)
    ``conv2d(x, w, None) + bias.reshape([C, 1, 1])`` instead of ``conv2d(x, w, bias)``.  Paddle's
    conv adds the bias as ``[1, C, 1, 1]``, and its CPU broadcast add takes a slow generic path
    for a same-rank operand with a leading 1: 0.77 ms against 0.05 ms for ``[C, 1, 1]`` on
    ``[8, 16, 32, 32]`` (fwd+bwd 1.72 vs 0.21 ms).

``downsample_pad`` (ppdiffusers ``Downsample2D`` with ``padding=0``, the VAE encoder's)
    one ``conv2d(x, w, padding=[0, 1, 0, 1], stride=2)`` instead of ``F.pad(x, (0, 1, 0, 1))``
    then the conv: the same zeros, without the separate pad3d op and its copy (fwd+bwd 6.3 ->
    2.9 ms at ``[8, 32, 32, 32]``).

``project`` (layers of this project that define ``set_fast_ops(enabled)``, e.g. the DiT blocks)
    their own fast path; the DiT blocks broadcast the adaLN shift/scale/gate ``[B, 1, C]`` with
    ``expand`` (0.05 ms against 0.51 ms for ``[32, 16, 128]``, the same slow same-rank broadcast).

GPU: :func:`apply_fast_ops` with ``enable="auto"`` does nothing unless ``paddle.get_device()``
is ``"cpu"``; the GPU paths are left untouched.
"""
import types

__all__ = ["FAST_OPS", "FAST_OPS_HELP", "parse_bool", "add_fast_ops_argument", "fast_ops_enabled", "apply_fast_cpu_flags",
           "apply_fast_ops", "remove_fast_ops", "describe_fast_ops"]

FAST_OPS = ("stride_kernel_off", "conv_bias", "downsample_pad", "project")
FAST_OPS_HELP = ("on CPU, run the measured faster Paddle paths of common/fast_ops.py (stride kernels off, conv bias as [C,1,1], "
                 "Downsample2D padding inside the conv, DiT adaLN broadcast by expand): same parameters, checkpoints and numbers; "
                 "False = paddle's stock paths. No effect on GPU")
_MARK = "_fast_ops_swap"  # instance attribute naming the swap a layer got
_TRUE, _FALSE = ("true", "1", "yes", "y", "on"), ("false", "0", "no", "n", "off")


def parse_bool(value):
    """``--fast_ops`` value: a bool, or ``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case).

    Raises:
        ValueError: anything else (argparse turns it into a usage error naming the flag).
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"expected True or False, got {value!r}")


def add_fast_ops_argument(parser):
    """Add ``--fast_ops`` (default True, :data:`FAST_OPS_HELP`) to an ``argparse`` parser; returns the parser."""
    parser.add_argument("--fast_ops", type=parse_bool, default=True, metavar="{True,False}", help=FAST_OPS_HELP)
    return parser


def fast_ops_enabled(enable=True):
    """Whether the fast paths apply: ``enable`` and the current device is the CPU (``paddle.get_device() == "cpu"``).

    Args:
        enable: bool (or a :func:`parse_bool` string); the scripts pass their ``--fast_ops``.

    Raises:
        ValueError: ``enable`` is not a bool-like value.
    """
    if not parse_bool(enable):
        return False
    import paddle

    return paddle.get_device() == "cpu"


def apply_fast_cpu_flags():
    """Turn paddle's stride kernels off for this process (``FLAGS_use_stride_kernel=False``).

    Why: see the module docstring (``stride_kernel_off``); views then become copies made by the
    fast transpose/slice kernels, and no op sees a non-contiguous input.  The numbers do not change.

    Returns:
        dict ``{"FLAGS_use_stride_kernel": previous value}``.
    """
    import paddle

    before = paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"]
    paddle.set_flags({"FLAGS_use_stride_kernel": False})
    return {"FLAGS_use_stride_kernel": before}


# ---------------------------------------------------------------------------------------------- swaps
def _conv2d_fast_forward(self, x, *args, **kwargs):
    """``Conv2D.forward`` with the bias added as ``[C, 1, 1]`` (``conv_bias``); ``*args`` takes the
    ``scale`` of ``LoRACompatibleConv.forward``.  A LoRA layer set later goes back to the class forward."""
    if getattr(self, "lora_layer", None) is not None:
        return type(self).forward(self, x, *args, **kwargs)
    import paddle.nn.functional as F

    out = F.conv2d(x, self.weight, None, self._stride, self._padding, self._dilation, self._groups, self._data_format)
    return out + self.bias.reshape([-1, 1, 1])


def _conv_swappable(layer):
    import paddle.nn as nn

    return (isinstance(layer, nn.Conv2D) and layer.bias is not None and layer._data_format == "NCHW"
            and layer._padding_mode == "zeros" and type(layer).forward in _CONV_FORWARDS())


def _CONV_FORWARDS():
    import paddle.nn as nn

    forwards = [nn.Conv2D.forward]
    try:
        from ppdiffusers.models.lora import LoRACompatibleConv

        forwards.append(LoRACompatibleConv.forward)
    except ImportError:  # pragma: no cover - ppdiffusers is a dependency
        pass
    return forwards


def _downsample_fast_forward(self, hidden_states, *args, **kwargs):
    """``Downsample2D.forward`` for ``use_conv`` and ``padding == 0``: the right/bottom zero row and
    column go into the conv's padding ``[0, 1, 0, 1]`` instead of an ``F.pad`` (``downsample_pad``)."""
    conv = self.conv
    if getattr(conv, "lora_layer", None) is not None:
        return type(self).forward(self, hidden_states, *args, **kwargs)
    import paddle.nn.functional as F

    out = F.conv2d(hidden_states, conv.weight, None, conv._stride, [0, 1, 0, 1], conv._dilation, conv._groups, "NCHW")
    return out if conv.bias is None else out + conv.bias.reshape([-1, 1, 1])


def _downsample_swappable(layer):
    try:
        from ppdiffusers.models.resnet import Downsample2D
    except ImportError:  # pragma: no cover
        return False
    import paddle.nn as nn

    if type(layer) is not Downsample2D:
        return False
    conv = getattr(layer, "conv", None)
    return (layer.use_conv and layer.padding == 0 and layer.data_format == "NCHW"
            and isinstance(conv, nn.Conv2D) and conv._data_format == "NCHW" and conv._padding_mode == "zeros"
            and conv._padding in (0, [0, 0], (0, 0)) and list(conv._dilation) == [1, 1])


def _swap_forward(layer, fn, name):
    layer.forward = types.MethodType(fn, layer)
    setattr(layer, _MARK, name)


def _layers(model):
    """The ``nn.Layer`` objects of ``model``: itself, or the layer components of a ppdiffusers pipeline."""
    import paddle.nn as nn

    if isinstance(model, nn.Layer):
        return [model]
    components = getattr(model, "components", None)
    if isinstance(components, dict):
        return [c for c in components.values() if isinstance(c, nn.Layer)]
    raise TypeError(f"fast ops: expected a paddle.nn.Layer or a ppdiffusers pipeline, got {type(model).__name__}")


def apply_fast_ops(model, enable=True, ops=FAST_OPS):
    """Swap the slow CPU paths of ``model`` for the measured faster ones (see the module docstring).

    Args:
        model: a ``paddle.nn.Layer`` (ppdiffusers model, the project's DiT, a VAE, a text encoder, a wrapper
            holding several) or a ppdiffusers pipeline (its layer components); every sublayer is looked at.
        enable: the script's ``--fast_ops`` (default True); it applies only on CPU (:func:`fast_ops_enabled`).
        ops: which swaps, a subset of :data:`FAST_OPS` (the benches switch them one at a time).

    Returns:
        dict: ``{"enabled": bool, "stride_kernel_off": bool, <swap>: number of layers swapped}``;
        nothing is changed when not enabled.  Applying twice swaps nothing more.

    Raises:
        ValueError: a bad ``enable`` value or an unknown name in ``ops``.
        TypeError: ``model`` is neither a layer nor a pipeline.
    """
    unknown = sorted(set(ops) - set(FAST_OPS))
    if unknown:
        raise ValueError(f"fast ops: unknown op(s) {unknown}; known: {', '.join(FAST_OPS)}")
    state = {"enabled": fast_ops_enabled(enable)}
    for name in FAST_OPS:
        state[name] = False if name == "stride_kernel_off" else 0
    if not state["enabled"]:
        return state
    layers = [sub for root in _layers(model) for sub in root.sublayers(include_self=True)]
    if "stride_kernel_off" in ops:
        apply_fast_cpu_flags()
        state["stride_kernel_off"] = True
    for layer in layers:
        if getattr(layer, _MARK, None):
            continue
        if "project" in ops and callable(getattr(layer, "set_fast_ops", None)):
            layer.set_fast_ops(True)
            setattr(layer, _MARK, "project")
            state["project"] += 1
        elif "downsample_pad" in ops and _downsample_swappable(layer):
            _swap_forward(layer, _downsample_fast_forward, "downsample_pad")
            state["downsample_pad"] += 1
        elif "conv_bias" in ops and _conv_swappable(layer):
            _swap_forward(layer, _conv2d_fast_forward, "conv_bias")
            state["conv_bias"] += 1
    return state


def remove_fast_ops(model):
    """Undo :func:`apply_fast_ops`'s layer swaps on ``model`` (the process flag is left as it is).

    Returns:
        int: the number of layers restored.
    """
    n = 0
    for layer in [sub for root in _layers(model) for sub in root.sublayers(include_self=True)]:
        name = getattr(layer, _MARK, None)
        if not name:
            continue
        if name == "project":
            layer.set_fast_ops(False)
        else:
            del layer.forward
        delattr(layer, _MARK)
        n += 1
    return n


def describe_fast_ops(state):
    """One log line for :func:`apply_fast_ops`'s result, e.g. ``"fast ops on (CPU): stride kernels off, conv_bias 36"``."""
    if not state.get("enabled"):
        return "fast ops off (--fast_ops False, or not on CPU): paddle's stock paths"
    parts = (["stride kernels off"] if state.get("stride_kernel_off") else []) + [
        f"{k} {v}" for k, v in state.items() if k not in ("enabled", "stride_kernel_off") and v]
    return "fast ops on (CPU): " + (", ".join(parts) or "nothing to swap")
