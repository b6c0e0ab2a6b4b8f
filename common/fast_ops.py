"""The fastest Paddle path for the hot ops of this project's models on CPU (issue 17 item 2).

:func:`apply_fast_ops` takes a built model (a ppdiffusers ``ModelMixin``, the project's DiT, a VAE,
a text encoder, a wrapper holding several, or a ppdiffusers pipeline) and swaps slow paths for
faster ones with the same parameters, the same ``state_dict`` keys and the same numbers up to
float rounding, so checkpoints and ``save_pretrained`` folders stay what plain ppdiffusers writes
and loads.  Every layer swap is per instance (an instance attribute ``forward`` that shadows the
class method; the project's own layers switch a flag through ``set_fast_ops``); nothing in paddle
or ppdiffusers is patched, and :func:`remove_fast_ops` undoes the layer swaps.  The training and
sampling scripts call it by default on CPU (``--fast_ops``, opt out with ``--fast_ops False``).

What each swap does and why (fwd+bwd ms measured with ``OMP_NUM_THREADS=1`` on a 2-core AMD EPYC,
paddle 3.3.1; ``bench/bench_ops.py`` has the numbers, ``bench/README.md`` the tables and the
whole-step before/after per demo):

``stride_kernel_off`` (process-wide, :func:`apply_fast_cpu_flags`)
    ``paddle.set_flags({"FLAGS_use_stride_kernel": False})``.  With stride kernels on (paddle's
    default) ``transpose`` / ``chunk`` / slicing return strided views, and paddle's CPU
    elementwise and matmul kernels on a non-contiguous input are very slow: at U-ViT's attention
    shape (B64 L25 H4 D32) ``q * scale`` on the transposed view takes 1.66 ms against 0.02 ms
    contiguous, and ``matmul(q, k^T)`` 3.5 ms against 0.2 ms; the whole U-ViT attention layer
    28.4 -> 12.4 ms.  Off, those ops copy once with the fast transpose kernel.  A process flag:
    it also speeds up the VAE / text encoder running next to the model.

``conv_bias`` (``nn.Conv2D`` and ppdiffusers' ``LoRACompatibleConv``, NCHW, ``padding_mode="zeros"``)
    ``conv2d(x, w, None) + bias.reshape([C, 1, 1])`` instead of ``conv2d(x, w, bias)``.  Paddle's
    conv adds the bias as ``[1, C, 1, 1]``, and its CPU broadcast add takes a slow generic path
    for a same-rank operand with a leading 1: 1.73 ms against 0.21 ms for ``[C, 1, 1]`` onto
    ``[8, 16, 32, 32]`` (the 3x3 conv there: 5.16 -> 3.61 ms).

``downsample_pad`` (ppdiffusers ``Downsample2D`` with ``padding=0``, the VAE encoder's)
    one ``conv2d(x, w, padding=[0, 1, 0, 1], stride=2)`` instead of ``F.pad(x, (0, 1, 0, 1))``
    then the conv: the same zeros without the separate pad3d op (5.7 -> 2.8 ms at ``[8, 32, 32, 32]``).

``linear_bias_grad`` (``nn.Linear`` / ``LoRACompatibleLinear`` with a bias, float32, outside autocast,
from :data:`LINEAR_MIN_OUTPUT` output elements on)
    ``x @ w + b`` as a ``PyLayer`` whose backward computes the bias gradient as the GEMM
    ``ones[1, N] @ dy`` (0.016 ms for ``[512, 512]``) instead of paddle's column reduction
    (0.57 ms): ``[32, 16, 128] x [128, 512]`` 4.35 -> 2.37 ms.  Without a gradient, in autocast, in
    another dtype or with a LoRA layer it runs the class forward.

``project`` (layers of this project that define ``set_fast_ops(enabled)``: the DiT blocks and final layer)
    their own fast path: the adaLN shift/scale/gate ``[B, 1, C]`` broadcast with ``expand``
    (modulate at ``[32, 16, 128]``: 1.36 -> 0.30 ms; the same slow same-rank broadcast as above).

``ada_norm_zero`` (ppdiffusers ``BasicTransformerBlock`` with ``norm_type="ada_norm_zero"``: the blocks of the
``Transformer2DModel`` that ``DiTPipeline`` samples with, as exported by ``class_conditional``)
    the same adaLN-Zero block (DiT paper, Fig. 3; facebookresearch/DiT ``DiTBlock``) with its shift / scale /
    gate rows expanded to the token shape before the multiply-add, instead of ppdiffusers' ``[B, 1, C]``
    broadcasts: forward only, ``[20, 16, 128]`` (the DiT demo sampled with guidance) modulate 0.35 -> 0.04 ms,
    gate 0.19 -> 0.02 ms.  Blocks with cross-attention, a position embedding, GLIGEN inputs or feed-forward
    chunking run the class forward.

Measured and not adopted (no win, or a win at some demo shapes and a loss at others): other
attention processors (with stride kernels off paddle's default ``AttnProcessor`` is as fast as
SDPA or a hand-written one), GroupNorm / LayerNorm compositions, NHWC or unfold+matmul convs,
1x1 conv as matmul, ``Upsample2D`` by reshape+expand, glibc malloc thresholds.

GPU: :func:`apply_fast_ops` does nothing unless ``paddle.get_device()`` is ``"cpu"``; the GPU
paths are left untouched.
"""
import types

__all__ = ["FAST_OPS", "FAST_OPS_HELP", "LINEAR_MIN_OUTPUT", "parse_bool", "add_fast_ops_argument", "fast_ops_enabled", "apply_fast_cpu_flags",
           "apply_fast_ops", "remove_fast_ops", "describe_fast_ops"]

FAST_OPS = ("stride_kernel_off", "conv_bias", "downsample_pad", "linear_bias_grad", "project", "ada_norm_zero")
FAST_OPS_HELP = ("on CPU, run the measured faster Paddle paths of common/fast_ops.py (stride kernels off, conv bias as [C,1,1], "
                 "Downsample2D padding inside the conv, Linear bias gradient as a GEMM, DiT adaLN broadcast by expand, also in "
                 "ppdiffusers' ada_norm_zero blocks): same parameters, "
                 "checkpoints and numbers up to float rounding; False = paddle's stock paths. No effect on GPU")
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
            and layer._padding_mode == "zeros" and type(layer).forward in _conv_forwards())


def _conv_forwards():
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


_LINEAR_FN = []
# linear_bias_grad only from this many output elements (rows x out features) on: below it the PyLayer's
# Python overhead (~0.03 ms fwd+bwd) is more than the column reduction it saves (measured fwd+bwd ms,
# F.linear -> PyLayer: [8,64]x[64,256] 0.066 -> 0.098, [256,128]x[128,128] 0.52 -> 0.54,
# [128,128]x[128,512] 1.20 -> 0.92, [512,128]x[128,512] 4.35 -> 2.37)
LINEAR_MIN_OUTPUT = 65536


def _linear_function():
    """The ``PyLayer`` of ``linear_bias_grad`` (built on first use: it needs paddle)."""
    if not _LINEAR_FN:
        import paddle
        from paddle.autograd import PyLayer

        class LinearBiasGrad(PyLayer):
            """``x @ w + b`` whose backward takes the bias gradient as ``ones[1, N] @ dy[N, C]`` (a GEMM)
            instead of paddle's column reduction, and the weight gradient as one 2-D GEMM."""

            @staticmethod
            def forward(ctx, x, weight, bias):
                ctx.save_for_backward(x, weight)
                ctx.needs = (not x.stop_gradient, not weight.stop_gradient, not bias.stop_gradient)
                return paddle.matmul(x, weight) + bias

            @staticmethod
            def backward(ctx, dy):
                x, weight = ctx.saved_tensor()
                cin, cout = weight.shape
                dy2 = dy.reshape([-1, cout])
                dx = paddle.matmul(dy, weight, transpose_y=True) if ctx.needs[0] else None
                dw = paddle.matmul(x.reshape([-1, cin]), dy2, transpose_x=True) if ctx.needs[1] else None
                db = paddle.matmul(paddle.ones([1, dy2.shape[0]], dy.dtype), dy2).reshape([cout]) if ctx.needs[2] else None
                return dx, dw, db

        _LINEAR_FN.append(LinearBiasGrad)
    return _LINEAR_FN[0]


def _linear_fast_forward(self, x, *args, **kwargs):
    """``Linear.forward`` through :func:`_linear_function` (``linear_bias_grad``) when a gradient is needed, in
    float32, outside autocast; otherwise (and with a LoRA layer) the class forward.  ``*args`` takes the
    ``scale`` of ``LoRACompatibleLinear.forward``."""
    import paddle

    if (getattr(self, "lora_layer", None) is not None or not paddle.is_grad_enabled() or paddle.is_autocast_enabled()
            or x.dtype != paddle.float32 or self.weight.dtype != paddle.float32
            or (x.stop_gradient and self.weight.stop_gradient and self.bias.stop_gradient)
            or x.size // max(x.shape[-1], 1) * self.weight.shape[1] < LINEAR_MIN_OUTPUT):
        return type(self).forward(self, x, *args, **kwargs)
    return _linear_function().apply(x, self.weight, self.bias)


def _linear_swappable(layer):
    import paddle.nn as nn

    forwards = [nn.Linear.forward]
    try:
        from ppdiffusers.models.lora import LoRACompatibleLinear

        forwards.append(LoRACompatibleLinear.forward)
    except ImportError:  # pragma: no cover
        pass
    return isinstance(layer, nn.Linear) and layer.bias is not None and type(layer).forward in forwards


def _ada_zero_fast_forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                           timestep=None, cross_attention_kwargs=None, class_labels=None, *args, **kwargs):
    """``BasicTransformerBlock.forward`` for ``norm_type="ada_norm_zero"`` (``ada_norm_zero``).

    hidden_states ``[B, L, C]`` float; timestep ``[B]``; class_labels ``[B]`` int64.  adaLN-Zero (Peebles & Xie,
    DiT, Fig. 3): ``c = Linear(SiLU(t_emb + y_emb))`` split into shift/scale/gate for the attention and the MLP;
    ``x + gate_msa * Attn(LN(x) * (1 + scale_msa) + shift_msa)``, then
    ``x + gate_mlp * MLP(LN(x) * (1 + scale_mlp) + shift_mlp)``.  Each ``[B, C]`` row is expanded to
    ``[B, L, C]`` once (paddle's CPU broadcast of a ``[B, 1, C]`` operand is the slow path).  Anything the
    block's other branches handle (extra arguments, GLIGEN kwargs, chunked feed-forward, a 4-D input) goes to
    the class forward.
    """
    if (args or kwargs or hidden_states.ndim != 3 or self._chunk_size is not None
            or (cross_attention_kwargs is not None and "gligen" in cross_attention_kwargs)):
        return type(self).forward(self, hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask,
                                  timestep, cross_attention_kwargs, class_labels, *args, **kwargs)
    norm1 = self.norm1
    emb = norm1.linear(norm1.silu(norm1.emb(timestep, class_labels, hidden_dtype=hidden_states.dtype)))
    shape = hidden_states.shape
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = [
        chunk.unsqueeze(1).expand(shape) for chunk in emb.chunk(6, axis=1)]
    cross_attention_kwargs = dict(cross_attention_kwargs or {})
    lora_scale = cross_attention_kwargs.get("scale", 1.0)
    attn_output = self.attn1(norm1.norm(hidden_states) * (1 + scale_msa) + shift_msa,
                             encoder_hidden_states=encoder_hidden_states if self.only_cross_attention else None,
                             attention_mask=attention_mask, **cross_attention_kwargs)
    hidden_states = gate_msa * attn_output + hidden_states
    ff_output = self.ff(self.norm3(hidden_states) * (1 + scale_mlp) + shift_mlp, scale=lora_scale)
    return gate_mlp * ff_output + hidden_states


def _ada_zero_swappable(layer):
    try:
        from ppdiffusers.models.attention import BasicTransformerBlock
    except ImportError:  # pragma: no cover
        return False
    return (type(layer) is BasicTransformerBlock and getattr(layer, "use_ada_layer_norm_zero", False)
            and getattr(layer, "attn2", None) is None and getattr(layer, "pos_embed", None) is None
            and getattr(getattr(layer, "norm1", None), "emb", None) is not None)


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
        elif "ada_norm_zero" in ops and _ada_zero_swappable(layer):
            _swap_forward(layer, _ada_zero_fast_forward, "ada_norm_zero")
            state["ada_norm_zero"] += 1
        elif "downsample_pad" in ops and _downsample_swappable(layer):
            _swap_forward(layer, _downsample_fast_forward, "downsample_pad")
            state["downsample_pad"] += 1
        elif "conv_bias" in ops and _conv_swappable(layer):
            _swap_forward(layer, _conv2d_fast_forward, "conv_bias")
            state["conv_bias"] += 1
        elif "linear_bias_grad" in ops and _linear_swappable(layer):
            _swap_forward(layer, _linear_fast_forward, "linear_bias_grad")
            state["linear_bias_grad"] += 1
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
