"""Capture a PyTorch model into the IR.

The model is traced with ``torch.fx``; neurons, the spike attention core and standard layers are
kept as leaf modules. The traced graph is then interpreted once on an example input so that every
value's concrete shape is known, and each fx node is translated by a *rule*: one per module type
(``register_module_rule``), per function (``register_function_rule``) or per tensor method
(``register_method_rule``). Registries reject duplicates. An fx node without a rule raises
:class:`~spikedeploy.errors.CaptureError` naming it and saying how to add a rule.

Layouts. IR values are ``[T, B, *s]``. Models written in the SDT style merge time and batch for
stateless layers (``conv(x.flatten(0, 1)).reshape(T, B, ...)``). The capture tracks, for each
tensor, whether it is in the *time-batch* layout ``[T, B, *s]`` or the *merged* layout
``[T*B, *s]`` from the concrete shapes (the example uses a batch size B >= 2 that differs from T,
so the two are never confused); reshapes that only merge or split T and B become no-ops, reshapes
of the per-step part become ``Reshape`` nodes, and a reshape that mixes T or B with feature axes
is an error.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from spikedeploy.errors import CaptureError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, TensorSpec, validate

TB, MERGED, CONST, META = "TB", "merged", "const", "meta"


@dataclass
class CValue:
    """A captured fx value: an IR value name (tensors), its layout and concrete shape, or a
    constant tensor (parameters/buffers), or a plain Python value (shapes, ints)."""

    layout: str
    name: Optional[str] = None
    shape: Tuple[int, ...] = ()
    const: Any = None
    #: macro-steps of an activation (the example's T unless a time-axis op changed it)
    steps: Optional[int] = None

    @property
    def step_shape(self) -> Tuple[int, ...]:
        return self.shape[2:] if self.layout == TB else self.shape[1:]


class CaptureContext:
    """Passed to rules: emits IR nodes and knows T and B of the capture example."""

    def __init__(self, T: int, B: int, B2: Optional[int] = None):
        self.T, self.B, self.B2 = T, B, B2 if B2 is not None else B
        self.shape2: Optional[Tuple[int, ...]] = None  #: the current node's shape in the second run
        self.nodes: List[Node] = []
        self.names: set = set()
        self.time_ops = False  #: a time-axis op was emitted: the graph input gets a fixed T

    def fresh(self, base: str) -> str:
        base = base.replace("/", ".") or "node"
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def emit(self, base: str, op: O.Op, inputs: Sequence[CValue], source: str, layout: str, shape,
             steps: Optional[int] = None) -> CValue:
        """Emit ``op``; the result has ``steps`` macro-steps (default: those of the first input)."""
        for v in inputs:
            if v.name is None:
                raise CaptureError(f"{source}: expected a tensor input, got a constant or Python value")
        name = self.fresh(base)
        self.nodes.append(Node(name=name, op=op, inputs=tuple(v.name for v in inputs), source=source))
        if isinstance(op, O.TIME_OPS):
            self.time_ops = True
        if steps is None:
            steps = inputs[0].steps if inputs else self.T
        return CValue(layout=layout, name=name, shape=tuple(shape), steps=steps)

    def alias(self, v: CValue, layout: str, shape) -> CValue:
        return CValue(layout=layout, name=v.name, shape=tuple(shape), steps=v.steps)

    def steps_of(self, v: CValue) -> int:
        return self.T if v.steps is None else int(v.steps)


ModuleRule = Callable[[CaptureContext, nn.Module, str, List[Any], Dict[str, Any], Any], CValue]

MODULE_RULES: Dict[type, ModuleRule] = {}
FUNCTION_RULES: Dict[Any, Callable] = {}
METHOD_RULES: Dict[str, Callable] = {}


def _register(table, key, what):
    def deco(fn):
        if key in table:
            raise ValueError(f"a capture rule for {what} {key!r} is already registered")
        table[key] = fn
        return fn

    return deco


def register_module_rule(module_type: type):
    """Decorator: ``rule(ctx, module, qualname, args, kwargs, out) -> CValue`` for ``module_type``
    (``args`` are CValues or Python values, ``out`` the concrete output of the example run)."""
    return _register(MODULE_RULES, module_type, "module type")


def register_function_rule(fn):
    """Decorator: ``rule(ctx, node_name, args, kwargs, out) -> CValue`` for a Python function."""
    return _register(FUNCTION_RULES, fn, "function")


def register_method_rule(name: str):
    """Decorator: ``rule(ctx, node_name, self_value, args, kwargs, out) -> CValue`` for a tensor method."""
    return _register(METHOD_RULES, name, "tensor method")


def _module_rule(module: nn.Module) -> Optional[ModuleRule]:
    for cls in type(module).__mro__:
        if cls in MODULE_RULES:
            return MODULE_RULES[cls]
    return None


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if _module_rule(m) is not None:
            return True
        return super().is_leaf_module(m, qualname)


class _Shape(tuple):
    """The shape of a tensor result, kept instead of the tensor (told apart from a tuple result)."""


class _Recorder(fx.Interpreter):
    """Runs the traced graph once and keeps every node's concrete result (``shapes_only``: only
    the shapes of its tensor results — the second example run needs no more, and keeping its
    values doubled the capture's memory: B384-T3's template branch peaked at ~14.5 GB)."""

    def __init__(self, gm, shapes_only: bool = False):
        super().__init__(gm)
        self.results: Dict[str, Any] = {}
        self.shapes_only = shapes_only

    def run_node(self, n):
        out = super().run_node(n)
        if not self.shapes_only:
            self.results[n.name] = out
        elif isinstance(out, torch.Tensor):
            self.results[n.name] = _Shape(int(d) for d in out.shape)
        return out


def _shape_of(out) -> Tuple[int, ...]:
    if not isinstance(out, torch.Tensor):
        raise CaptureError(f"expected a tensor result, got {type(out).__name__}")
    return tuple(int(d) for d in out.shape)


def _layout_for(ctx: CaptureContext, shape: Tuple[int, ...], where: str, steps: Optional[int] = None) -> str:
    """Layout of a result with ``steps`` macro-steps (default: the example's T) from its shapes in
    the two example runs (batch sizes B and B2)."""
    T = ctx.T if steps is None else int(steps)
    shape2 = ctx.shape2 if ctx.shape2 is not None else shape
    if (len(shape) >= 2 and len(shape2) == len(shape) and shape[:2] == (T, ctx.B)
            and shape2[:2] == (T, ctx.B2) and shape[2:] == shape2[2:]):
        return TB
    if (len(shape) >= 1 and len(shape2) == len(shape) and shape[0] == T * ctx.B
            and shape2[0] == T * ctx.B2 and shape[1:] == shape2[1:]):
        return MERGED
    raise CaptureError(
        f"{where}: result of shape {list(shape)} keeps neither the time/batch axes [T={T}, "
        f"B={ctx.B}, ...] nor the merged axis [T*B={T * ctx.B}, ...]; reshapes may only merge "
        "or split T and B, never mix them with feature axes"
    )


def _step(shape, layout):
    return tuple(shape[2:]) if layout == TB else tuple(shape[1:])


# ---------------------------------------------------------------------------------------------
# the capture
# ---------------------------------------------------------------------------------------------


def capture(
    model: nn.Module,
    example: torch.Tensor,
    *,
    name: str = "",
    input_name: str = "x",
) -> Graph:
    """Capture ``model`` (called as ``model(x)`` with ``x`` of shape ``[T, B, *s]``) into an IR
    graph. ``example`` fixes T and the per-step shape; the model is run on two random inputs with
    two different batch sizes, so the batch axis is told apart from any feature axis. The model is
    run in eval mode; every submodule's own training flag is restored afterwards."""
    if example.dim() < 3:
        raise CaptureError(f"example input must have shape [T, B, ...], got {list(example.shape)}")
    T = int(example.shape[0])
    # two example batch sizes: an axis is the batch axis only if it follows the batch size in both
    # (B2 = 2 * B1 keeps the divisibility a model's reshapes may rely on)
    B1 = 2 if T != 2 else 3
    B2 = 2 * B1
    xs = [torch.randn((T, b) + tuple(example.shape[2:]), dtype=example.dtype) for b in (B1, B2)]
    modes = {m: m.training for m in model.modules()}  # restored one by one: train(flag) is recursive
    model.eval()
    try:
        try:
            graph = _Tracer().trace(model)
        except CaptureError:
            raise
        except Exception as e:  # fx raises many types for untraceable Python
            raise CaptureError(
                f"torch.fx could not trace {type(model).__name__}: {type(e).__name__}: {e}. "
                "Data-dependent control flow must live inside a leaf module with a capture rule."
            ) from None
        n_inputs = sum(1 for n in graph.nodes if n.op == "placeholder")
        if n_inputs != 1:
            raise CaptureError(
                f"{type(model).__name__}.forward takes {n_inputs} tensor inputs; only single-input models "
                "are supported by capture() — wrap the model so that forward(x) takes one [T, B, ...] tensor"
            )
        gm = fx.GraphModule(model, graph)
        recs = [_Recorder(gm), _Recorder(gm, shapes_only=True)]
        with torch.no_grad():
            for rec, x in zip(recs, xs):
                try:
                    rec.run(x)
                except Exception as e:
                    raise CaptureError(
                        f"{type(model).__name__} failed on a capture example of shape {list(x.shape)}: "
                        f"{type(e).__name__}: {str(e).splitlines()[0]}. The model must accept any batch size."
                    ) from None
        return _translate(gm, recs[0].results, recs[1].results, T, (B1, B2), name or type(model).__name__,
                          input_name)
    finally:
        for m, flag in modes.items():
            m.training = flag


def _translate(gm, results, results2, T, batches, model_name, input_name) -> Graph:
    ctx = CaptureContext(T, batches[0], batches[1])
    env: Dict[str, Any] = {}
    inputs: List[TensorSpec] = []
    outputs: List[str] = []

    def val(a):
        return fx.node.map_arg(a, lambda n: env[n.name])

    for node in gm.graph.nodes:
        out = results.get(node.name)
        out2 = results2.get(node.name)
        ctx.shape2 = tuple(out2) if isinstance(out2, _Shape) else None
        where = f"fx node {node.name!r} ({node.op} {node.target})"
        if node.op == "placeholder":
            shape = _shape_of(out)
            ctx.names.add(input_name)
            inputs.append(TensorSpec(input_name, shape[2:]))
            env[node.name] = CValue(TB, input_name, shape, steps=T)
        elif node.op == "get_attr":
            env[node.name] = CValue(CONST, const=out)
        elif node.op == "call_module":
            module = gm.get_submodule(node.target)
            rule = _module_rule(module)
            if rule is None:
                raise CaptureError(
                    f"no capture rule for module {node.target!r} of type {type(module).__module__}."
                    f"{type(module).__name__}; add one with "
                    "@spikedeploy.capture.register_module_rule(ThatType) (see docs/architecture.md)"
                )
            env[node.name] = rule(ctx, module, str(node.target), val(node.args), val(node.kwargs), out)
        elif node.op in ("call_function", "call_method") and not _has_activation(
            list(_flatten_args(val(node.args))) + list(_flatten_args(val(node.kwargs)))
        ):
            # no activation among the arguments: a constant (e.g. stacked position embeddings) or
            # a Python value (shape arithmetic), known from the example run
            env[node.name] = CValue(CONST if isinstance(out, torch.Tensor) else META, const=out)
        elif node.op == "call_function" and isinstance(node.target, type) and issubclass(node.target, tuple):
            # a NamedTuple of results (e.g. a model's output record): keep its fields in order
            args = list(val(node.args)) + [val(node.kwargs)[f] for f in getattr(node.target, "_fields", ())[len(node.args):]]
            env[node.name] = tuple(args)
        elif node.op == "call_function":
            rule = FUNCTION_RULES.get(node.target)
            if rule is None:
                fname = getattr(node.target, "__qualname__", str(node.target))
                mod = getattr(node.target, "__module__", "") or ""
                raise CaptureError(
                    f"no capture rule for function {mod + '.' if mod else ''}{fname} "
                    f"(fx node {node.name!r}, in {_stack(node)}); add one with "
                    "@spikedeploy.capture.register_function_rule(fn), or move it into a leaf module"
                )
            env[node.name] = rule(ctx, node.name, val(node.args), val(node.kwargs), out)
        elif node.op == "call_method":
            rule = METHOD_RULES.get(node.target)
            if rule is None:
                raise CaptureError(
                    f"no capture rule for tensor method .{node.target}() (fx node {node.name!r}, in "
                    f"{_stack(node)}); add one with @spikedeploy.capture.register_method_rule"
                    f"({node.target!r})"
                )
            args = val(node.args)
            env[node.name] = rule(ctx, node.name, args[0], list(args[1:]), val(node.kwargs), out)
        elif node.op == "output":
            res = val(node.args[0])
            flat = list(res) if isinstance(res, (tuple, list)) else [res]
            for v in flat:
                if not isinstance(v, CValue) or v.name is None:
                    raise CaptureError("model outputs must be tensors computed from the input")
                if v.layout != TB:
                    raise CaptureError(
                        f"model output {v.name!r} has the merged [T*B, ...] layout; reshape it to [T, B, ...]"
                    )
                outputs.append(v.name)
        else:  # pragma: no cover
            raise CaptureError(f"{where}: unexpected fx node kind")
    if ctx.time_ops:  # time-axis ops give fixed step counts: the input's T is fixed too
        inputs = [TensorSpec(s.name, s.shape, T) for s in inputs]
    g = Graph(
        inputs=tuple(inputs),
        nodes=tuple(ctx.nodes),
        outputs=tuple(outputs),
        meta=(("capture_T", T), ("model", model_name)),
    )
    validate(g)
    return g


def _stack(node) -> str:
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.keys())[-1] if isinstance(stack, dict) else str(stack)
        return f"module {path!r}"
    return "the model's forward"


# ---------------------------------------------------------------------------------------------
# module rules
# ---------------------------------------------------------------------------------------------


def _p(t) -> Optional[np.ndarray]:
    return None if t is None else O.as_param(t.detach().cpu().double().numpy())


def _tensor_arg(args, where) -> CValue:
    if not args or not isinstance(args[0], CValue) or args[0].name is None:
        raise CaptureError(f"{where}: expected a tensor argument")
    return args[0]


def _stateless(ctx, where, op, x: CValue, out) -> CValue:
    shape = _shape_of(out)
    return ctx.emit(where, op, [x], source=where, layout=x.layout, shape=shape)


@register_module_rule(nn.Conv2d)
def _conv2d(ctx, m, where, args, kwargs, out):
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise CaptureError(
            f"{where}: Conv2d with padding={m.padding!r}, padding_mode={m.padding_mode!r} is not "
            "supported; use integer zero padding"
        )
    op = O.Conv2d(
        weight=_p(m.weight), bias=_p(m.bias), stride=tuple(m.stride), padding=tuple(m.padding),
        dilation=tuple(m.dilation), groups=m.groups,
    )
    return _stateless(ctx, where, op, _tensor_arg(args, where), out)


@register_module_rule(nn.Conv1d)
def _conv1d(ctx, m, where, args, kwargs, out):
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise CaptureError(f"{where}: Conv1d with padding={m.padding!r}/{m.padding_mode!r} is not supported")
    op = O.Conv1d(
        weight=_p(m.weight), bias=_p(m.bias), stride=int(m.stride[0]), padding=int(m.padding[0]),
        dilation=int(m.dilation[0]), groups=m.groups,
    )
    return _stateless(ctx, where, op, _tensor_arg(args, where), out)


@register_module_rule(nn.Linear)
def _linear(ctx, m, where, args, kwargs, out):
    return _stateless(ctx, where, O.Linear(weight=_p(m.weight), bias=_p(m.bias)), _tensor_arg(args, where), out)


def _bn(ctx, m, where, args, out, frozen=False):
    x = _tensor_arg(args, where)
    if x.layout != MERGED:
        raise CaptureError(f"{where}: BatchNorm must see the merged [T*B, C, ...] layout")
    op = O.BatchNorm(
        mean=_p(m.running_mean), var=_p(m.running_var), weight=_p(m.weight), bias=_p(m.bias), eps=float(m.eps),
        frozen=frozen,
    )
    return _stateless(ctx, where, op, x, out)


@register_module_rule(nn.modules.batchnorm._BatchNorm)
def _batchnorm(ctx, m, where, args, kwargs, out):
    if not m.track_running_stats or m.running_mean is None:
        raise CaptureError(f"{where}: BatchNorm without running statistics cannot be captured")
    if not m.affine:
        ones = torch.ones_like(m.running_mean)
        m = type("AffineView", (), dict(running_mean=m.running_mean, running_var=m.running_var,
                                        weight=ones, bias=torch.zeros_like(ones), eps=m.eps))
    return _bn(ctx, m, where, args, out)


@register_module_rule(nn.AvgPool2d)
def _avgpool(ctx, m, where, args, kwargs, out):
    if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
        raise CaptureError(f"{where}: AvgPool2d with ceil_mode/count_include_pad=False/divisor_override is not supported")
    op = O.AvgPool2d(kernel=O._pair(m.kernel_size), stride=O._pair(m.stride or m.kernel_size), padding=O._pair(m.padding))
    return _stateless(ctx, where, op, _tensor_arg(args, where), out)


@register_module_rule(nn.Upsample)
def _upsample(ctx, m, where, args, kwargs, out):
    x = _tensor_arg(args, where)
    if m.mode not in ("bilinear", "nearest") or x.layout != MERGED:
        raise CaptureError(f"{where}: Upsample mode {m.mode!r} on layout {x.layout} is not supported "
                           "(bilinear or nearest on [T*B, C, H, W])")
    shape = _shape_of(out)
    op = O.Upsample(size=tuple(shape[-2:]), mode=m.mode, align_corners=bool(m.align_corners))
    return ctx.emit(where, op, [x], source=where, layout=x.layout, shape=shape)


@register_module_rule(nn.Identity)
def _identity(ctx, m, where, args, kwargs, out):
    return _tensor_arg(args, where)


@register_module_rule(nn.Dropout)
def _dropout(ctx, m, where, args, kwargs, out):
    return _tensor_arg(args, where)  # eval mode: identity


@register_module_rule(nn.Flatten)
def _flatten_module(ctx, m, where, args, kwargs, out):
    return _reshape_like(ctx, where, _tensor_arg(args, where), out)


# ---------------------------------------------------------------------------------------------
# tensor functions and methods
# ---------------------------------------------------------------------------------------------


def _reshape_like(ctx, where, x: CValue, out) -> CValue:
    shape = _shape_of(out)
    layout = _layout_for(ctx, shape, where, x.steps)
    step = _step(shape, layout)
    if step == x.step_shape:
        return ctx.alias(x, layout, shape)
    return ctx.emit(where, O.Reshape(shape=step), [x], source=where, layout=layout, shape=shape)


for _m in ("flatten", "reshape", "view", "unsqueeze", "squeeze"):
    register_method_rule(_m)(lambda ctx, where, x, args, kwargs, out: _reshape_like(ctx, where, x, out))
register_function_rule(torch.flatten)(lambda ctx, where, args, kwargs, out: _reshape_like(ctx, where, args[0], out))
register_function_rule(torch.reshape)(lambda ctx, where, args, kwargs, out: _reshape_like(ctx, where, args[0], out))

for _m in ("contiguous", "clone", "detach"):
    register_method_rule(_m)(lambda ctx, where, x, args, kwargs, out: x)


def _permute_full(ctx, where, x: CValue, perm: List[int], out) -> CValue:
    lead = 2 if x.layout == TB else 1
    n = len(x.shape)
    perm = [p % n for p in perm]
    if perm[:lead] != list(range(lead)):
        raise CaptureError(
            f"{where}: a transpose/permute that moves the time or batch axis is not supported "
            f"(permutation {perm} on layout {x.layout})"
        )
    step_perm = tuple(p - lead for p in perm[lead:])
    shape = _shape_of(out)
    if step_perm == tuple(range(len(step_perm))):
        return ctx.alias(x, x.layout, shape)
    return ctx.emit(where, O.Permute(perm=step_perm), [x], source=where, layout=x.layout, shape=shape)


@register_method_rule("transpose")
def _transpose(ctx, where, x, args, kwargs, out):
    n = len(x.shape)
    a, b = (int(v) % n for v in args[:2])
    perm = list(range(n))
    perm[a], perm[b] = perm[b], perm[a]
    return _permute_full(ctx, where, x, perm, out)


@register_method_rule("permute")
def _permute(ctx, where, x, args, kwargs, out):
    perm = list(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else list(args)
    return _permute_full(ctx, where, x, [int(p) for p in perm], out)


def _const_step_value(ctx, where, c, x: CValue) -> np.ndarray:
    """A constant added to x, as a per-step array (it may not vary over T or B)."""
    arr = c.detach().cpu().double().numpy() if isinstance(c, torch.Tensor) else np.asarray(c, dtype=np.float64)
    full = arr.reshape((1,) * (len(x.shape) - arr.ndim) + arr.shape) if arr.ndim <= len(x.shape) else arr
    lead = 2 if x.layout == TB else 1
    if full.ndim == len(x.shape) and x.layout == TB and full.shape[0] > 1 and bool((full == full[:1]).all()):
        full = full[:1]  # one value per step, all equal (e.g. zero position embeddings)
    if full.ndim != len(x.shape) or any(d != 1 for d in full.shape[:lead]):
        raise CaptureError(f"{where}: a constant added to a tensor may not vary over time or batch")
    return full.reshape(full.shape[lead:])


def _repeat_to(ctx, where, v: CValue, steps: int) -> CValue:
    """``RepeatTime(steps)`` of a one-step [1, B, ...] activation."""
    shape = (steps,) + tuple(v.shape[1:])
    return ctx.emit(f"{where}.repeat", O.RepeatTime(times=int(steps)), [v], source=where, layout=TB, shape=shape,
                    steps=int(steps))


def _add(ctx, where, a, b, out):
    ta, tb = isinstance(a, CValue) and a.name, isinstance(b, CValue) and b.name
    if ta and tb:
        if (a.layout == b.layout == TB and a.shape[1:] == b.shape[1:] and a.shape[0] != b.shape[0]
                and 1 in (ctx.steps_of(a), ctx.steps_of(b))):
            # PyTorch broadcasting over the time axis: a one-step value added to every step
            if ctx.steps_of(a) == 1:
                a = _repeat_to(ctx, where, a, ctx.steps_of(b))
            else:
                b = _repeat_to(ctx, where, b, ctx.steps_of(a))
        if a.layout != b.layout or a.shape != b.shape:
            raise CaptureError(f"{where}: adding tensors of shapes {list(a.shape)} and {list(b.shape)} (broadcasting between activations is not supported)")
        return ctx.emit(where, O.Add(), [a, b], source=where, layout=a.layout, shape=_shape_of(out))
    if not (ta or tb):
        raise CaptureError(f"{where}: an addition without any activation input")
    x, c = (a, b) if ta else (b, a)
    const = c.const if isinstance(c, CValue) else c
    per_step = _time_varying_constant(ctx, where, const, x)
    if per_step is not None:
        return _add_per_step(ctx, where, x, per_step, out)
    value = _const_step_value(ctx, where, const, x)
    return ctx.emit(where, O.AddConstant(value=O.as_param(value)), [x], source=where, layout=x.layout, shape=_shape_of(out))


def _time_varying_constant(ctx, where, c, x: CValue) -> Optional[np.ndarray]:
    """A constant ``[T, 1, *s]`` added to a ``[T, B, *s]`` activation (T > 1) whose steps differ
    (e.g. one position embedding per template): its per-step values ``[T, *s]``, else None."""
    arr = c.detach().cpu().double().numpy() if isinstance(c, torch.Tensor) else np.asarray(c, dtype=np.float64)
    steps = ctx.steps_of(x)
    if x.layout != TB or steps == 1 or arr.ndim != len(x.shape) or arr.shape[0] != steps or arr.shape[1] != 1:
        return None
    if bool((arr == arr[:1]).all()):
        return None  # the same value at every step: a plain AddConstant
    return arr[:, 0]


def _add_per_step(ctx, where, x: CValue, values: np.ndarray, out) -> CValue:
    """``x[t] + values[t]`` as SelectStep -> AddConstant -> StackSteps (bit-identical to PyTorch's
    broadcast addition)."""
    parts = []
    one = (1,) + tuple(x.shape[1:])
    for t in range(values.shape[0]):
        xt = ctx.emit(f"{where}.step{t}", O.SelectStep(step=t), [x], source=where, layout=TB, shape=one, steps=1)
        parts.append(ctx.emit(f"{where}.add{t}", O.AddConstant(value=O.as_param(values[t])), [xt], source=where,
                              layout=TB, shape=one, steps=1))
    return ctx.emit(where, O.StackSteps(), parts, source=where, layout=TB, shape=_shape_of(out), steps=len(parts))


def _add_alpha(ctx, where, a, b, kwargs, out):
    """``torch.add(a, b, alpha=s)`` = a + s * b."""
    alpha = kwargs.get("alpha", 1)
    if isinstance(alpha, CValue):
        alpha = alpha.const
    if alpha != 1:
        if isinstance(b, CValue) and b.name:
            b = ctx.emit(f"{where}.alpha", O.Scale(factor=float(alpha)), [b], source=where, layout=b.layout,
                         shape=b.shape)
        else:
            const = b.const if isinstance(b, CValue) else b
            b = const * alpha
    return _add(ctx, where, a, b, out)


register_function_rule(operator.add)(lambda ctx, where, args, kwargs, out: _add(ctx, where, args[0], args[1], out))
register_function_rule(operator.iadd)(lambda ctx, where, args, kwargs, out: _add(ctx, where, args[0], args[1], out))
register_function_rule(torch.add)(
    lambda ctx, where, args, kwargs, out: _add_alpha(ctx, where, args[0], args[1], kwargs, out)
)
register_method_rule("add")(lambda ctx, where, x, args, kwargs, out: _add_alpha(ctx, where, x, args[0], kwargs, out))


def _number(v):
    """A Python number, unwrapping values computed from shapes (META)."""
    return v.const if isinstance(v, CValue) and v.layout == META else v


def _scale(ctx, where, x, factor, out):
    factor = _number(factor)
    if not isinstance(x, CValue) or x.name is None or not isinstance(factor, (int, float)):
        raise CaptureError(f"{where}: only multiplication/division of an activation by a Python number is supported")
    return ctx.emit(where, O.Scale(factor=float(factor)), [x], source=where, layout=x.layout, shape=_shape_of(out))


@register_function_rule(operator.mul)
def _mul(ctx, where, args, kwargs, out):
    a, b = args
    if not _has_activation(args):
        return _meta(ctx, where, out)
    return _scale(ctx, where, a, b, out) if isinstance(a, CValue) and a.name else _scale(ctx, where, b, a, out)


@register_function_rule(operator.truediv)
def _div(ctx, where, args, kwargs, out):
    a, b = args[0], _number(args[1])
    if not _has_activation(args):
        return _meta(ctx, where, out)
    if not isinstance(b, (int, float)) or b == 0:
        raise CaptureError(f"{where}: only division by a non-zero Python number is supported")
    if not (isinstance(a, CValue) and a.name):
        raise CaptureError(f"{where}: only division of an activation by a Python number is supported")
    return ctx.emit(where, O.Scale(divisor=float(b)), [a], source=where, layout=a.layout, shape=_shape_of(out))


def _mean(ctx, where, x: CValue, dim, keepdim, out):
    n = len(x.shape)
    dims = [dim] if isinstance(dim, int) else list(dim) if dim is not None else None
    if dims is None:
        raise CaptureError(f"{where}: mean over all axes would mix time and batch; give the axes")
    lead = 2 if x.layout == TB else 1
    dims = sorted(d % n for d in dims)
    if dims[0] < lead:
        raise CaptureError(f"{where}: mean over the time or batch axis is not supported")
    op = O.MeanReduce(axes=tuple(d - lead for d in dims), keepdim=bool(keepdim))
    return ctx.emit(where, op, [x], source=where, layout=x.layout, shape=_shape_of(out))


@register_method_rule("mean")
def _mean_method(ctx, where, x, args, kwargs, out):
    dim = args[0] if args else kwargs.get("dim")
    keep = args[1] if len(args) > 1 else kwargs.get("keepdim", False)
    return _mean(ctx, where, x, dim, keep, out)


@register_function_rule(torch.mean)
def _mean_fn(ctx, where, args, kwargs, out):
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    return _mean(ctx, where, args[0], dim, keep, out)


@register_function_rule(torch.cat)
def _cat(ctx, where, args, kwargs, out):
    xs = list(args[0])
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not all(isinstance(v, CValue) and v.name for v in xs) or len({v.layout for v in xs}) != 1:
        raise CaptureError(f"{where}: torch.cat needs activations of one layout")
    lead = 2 if xs[0].layout == TB else 1
    axis = int(dim) % len(xs[0].shape)
    if axis < lead:
        raise CaptureError(f"{where}: concatenation along the time or batch axis is not supported")
    return ctx.emit(where, O.Concat(axis=axis - lead), xs, source=where, layout=xs[0].layout, shape=_shape_of(out))


def _meta(ctx, where, out):
    return CValue(META, const=out)


register_function_rule(getattr)(lambda ctx, where, args, kwargs, out: _meta(ctx, where, out))
register_method_rule("size")(lambda ctx, where, x, args, kwargs, out: _meta(ctx, where, out))
register_method_rule("dim")(lambda ctx, where, x, args, kwargs, out: _meta(ctx, where, out))


def _time_axis_unsupported(ctx, where, what):
    return CaptureError(
        f"{where}: {what} acts on the time axis in a way the IR cannot express (supported: x[t] -> "
        "SelectStep, torch.stack of one-step values along dim 0 -> StackSteps, .repeat(T, 1, ...) of a "
        "one-step value -> RepeatTime, broadcasting a one-step value in an addition)"
    )


@register_function_rule(operator.getitem)
def _getitem(ctx, where, args, kwargs, out):
    obj, idx = args[0], args[1]
    if isinstance(obj, CValue) and obj.layout == META:
        return _meta(ctx, where, out)
    if isinstance(obj, CValue) and obj.name and obj.layout == TB and isinstance(idx, int):
        steps = ctx.steps_of(obj)
        if not -steps <= idx < steps:
            raise CaptureError(f"{where}: index x[{idx}] out of range for {steps} macro-steps")
        if steps == 1:
            # x[0] of one step is the same data in the merged [B, ...] layout
            return ctx.alias(obj, MERGED, _shape_of(out))
        return ctx.emit(where, O.SelectStep(step=idx % steps), [obj], source=where, layout=MERGED,
                        shape=_shape_of(out), steps=1)
    raise CaptureError(f"{where}: indexing/slicing an activation is not supported; use a leaf module")


@register_function_rule(torch.stack)
def _torch_stack(ctx, where, args, kwargs, out):
    xs = list(args[0])
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    one_step = all(isinstance(v, CValue) and v.name and v.layout == MERGED and ctx.steps_of(v) == 1 for v in xs)
    if xs and dim == 0 and one_step:
        if len(xs) == 1:
            return ctx.alias(xs[0], TB, _shape_of(out))  # stacking the one step back: [B, ...] -> [1, B, ...]
        return ctx.emit(where, O.StackSteps(), xs, source=where, layout=TB, shape=_shape_of(out), steps=len(xs))
    raise _time_axis_unsupported(ctx, where, "torch.stack of activations (only one-step [B, ...] values along dim 0)")


@register_method_rule("repeat")
def _repeat(ctx, where, x, args, kwargs, out):
    reps = list(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else list(args)
    reps = [_number(r) for r in reps]
    if all(r == 1 for r in reps):
        return ctx.alias(x, x.layout, _shape_of(out))
    if x.layout == TB and all(r == 1 for r in reps[1:]) and len(reps) == len(x.shape):
        if ctx.steps_of(x) != 1:
            raise _time_axis_unsupported(ctx, where, f".repeat({', '.join(map(str, reps))}) of a {ctx.steps_of(x)}-step value")
        return ctx.emit(where, O.RepeatTime(times=int(reps[0])), [x], source=where, layout=TB, shape=_shape_of(out),
                        steps=int(reps[0]))
    raise CaptureError(f"{where}: .repeat({reps}) of an activation is not supported")


def _has_activation(args) -> bool:
    return any(isinstance(a, CValue) and a.name for a in args)


def _flatten_args(a):
    """Every leaf of a nested tuple/list/dict of fx arguments."""
    if isinstance(a, (tuple, list)):
        for x in a:
            yield from _flatten_args(x)
    elif isinstance(a, dict):
        for x in a.values():
            yield from _flatten_args(x)
    else:
        yield a


def _meta_arith(fn):
    def rule(ctx, where, args, kwargs, out):
        if not _has_activation(args):
            return _meta(ctx, where, out)
        raise CaptureError(f"{where}: {fn.__name__} on activations is not supported")

    return rule


register_function_rule(operator.floordiv)(_meta_arith(operator.floordiv))
register_function_rule(operator.sub)(_meta_arith(operator.sub))


# ---------------------------------------------------------------------------------------------
# spikedeploy's own leaf modules: neurons and the spike attention core
# ---------------------------------------------------------------------------------------------


def _neuron(ctx, where, x: CValue, op, out):
    if x.layout != TB:
        raise CaptureError(
            f"{where}: neuron {op.label} receives the merged [T*B, ...] layout; neurons need [T, B, ...] "
            "(reshape before calling it)"
        )
    return ctx.emit(where, op, [x], source=where, layout=TB, shape=_shape_of(out))


def _register_model_rules():
    from spikedeploy.models import layers as L
    from spikedeploy.models import neurons as MN

    @register_module_rule(MN.MultiSpike)
    def _multispike(ctx, m, where, args, kwargs, out):
        op = O.IntegerLIF(d=int(m.d), norm=float(m.norm), leak=None, rounding=m.rounding,
                          label="MultiSpike" if m.rounding == "half_even" else "MultiSpike(half-up)")
        return _neuron(ctx, where, _tensor_arg(args, where), op, out)

    @register_module_rule(MN.LeakyIntegerLIF)
    def _leaky(ctx, m, where, args, kwargs, out):
        op = O.IntegerLIF(d=int(m.d), norm=1.0, leak=float(m.leak), reset_norm=1.0, label="I-LIF(leak)")
        return _neuron(ctx, where, _tensor_arg(args, where), op, out)

    @register_module_rule(MN.NILIF)
    def _nilif(ctx, m, where, args, kwargs, out):
        leaks = tuple(float(v) for v in torch.sigmoid(m.decay.detach()).cpu().tolist())
        op = O.IntegerLIF(d=int(m.d), norm=float(m.norm), leak=leaks, reset_norm=float(m.norm), label="NI-LIF")
        return _neuron(ctx, where, _tensor_arg(args, where), op, out)

    @register_module_rule(MN.IntegerIF)
    def _intif(ctx, m, where, args, kwargs, out):
        op = O.IntegerLIF(d=int(m.d), norm=float(m.norm), leak=1.0, reset_norm=1.0, label="IF")
        return _neuron(ctx, where, _tensor_arg(args, where), op, out)

    @register_module_rule(MN.BinaryLIF)
    def _blif(ctx, m, where, args, kwargs, out):
        op = O.BinaryLIF(beta=float(m.beta), threshold=float(m.threshold))
        return _neuron(ctx, where, _tensor_arg(args, where), op, out)

    @register_module_rule(MN.DILIF)
    def _dilif(ctx, m, where, args, kwargs, out):
        op = O.DynamicIntegerLIF(
            d_init=int(m.d_init), gate_w=float(m.gate_w.detach()), gate_b=float(m.gate_b.detach()),
            leak=None if m.leak is None else float(m.leak),
        )
        return _neuron(ctx, where, _tensor_arg(args, where), op, out)

    @register_module_rule(L.SpikeLinearAttention)
    def _attention(ctx, m, where, args, kwargs, out):
        q, k, v = (list(args) + [kwargs[n] for n in ("q", "k", "v")[len(args):]])[:3]
        for t in (q, k, v):
            if not isinstance(t, CValue) or t.layout != TB:
                raise CaptureError(f"{where}: attention inputs must be [T, B, C, N] activations")
        op = O.SpikeLinearAttention(num_heads=int(m.num_heads), scale=float(m.scale))
        return ctx.emit(where, op, [q, k, v], source=where, layout=TB, shape=_shape_of(out))

    from spikedeploy.models import spiketrack_blocks as STB

    @register_module_rule(STB.MemoryWrite)
    def _memory_write(ctx, m, where, args, kwargs, out):
        k, v = (list(args) + [kwargs[n] for n in ("k", "v")[len(args):]])[:2]
        for t in (k, v):
            if not isinstance(t, CValue) or t.layout != TB or not t.name:
                raise CaptureError(f"{where}: memory write inputs must be [T, B, C, N] activations")
        op = O.MemoryWrite(num_heads=int(m.num_heads))
        return ctx.emit(where, op, [k, v], source=where, layout=TB, shape=_shape_of(out))

    @register_module_rule(STB.MemoryRead)
    def _memory_read(ctx, m, where, args, kwargs, out):
        q, kv = (list(args) + [kwargs[n] for n in ("q", "kv")[len(args):]])[:2]
        if not isinstance(q, CValue) or q.layout != TB or not q.name:
            raise CaptureError(f"{where}: the memory read's q must be a [T, B, C, N] activation")
        if not (isinstance(kv, CValue) and kv.layout == CONST):
            raise CaptureError(
                f"{where}: the memory must be a constant of the captured graph (a buffer, as in "
                "SpikeTrackSearchNet); a memory computed in the same graph is not supported"
            )
        mem = kv.const.detach().cpu().double()
        if mem.dim() != 5 or mem.shape[1] != 1 and not bool((mem == mem[:, :1]).all()):
            raise CaptureError(f"{where}: the memory must be [T, 1, H, C/H, Cv/H] (one memory for every sample)")
        if mem.shape[0] not in (1, ctx.steps_of(q)):
            raise CaptureError(f"{where}: the memory has {mem.shape[0]} steps but q has {ctx.steps_of(q)}")
        op = O.MemoryRead(memory=O.as_param(mem[:, 0].numpy()), num_heads=int(m.num_heads), scale=float(m.scale))
        return ctx.emit(where, op, [q], source=where, layout=TB, shape=_shape_of(out))

    @register_module_rule(STB.TemplateGate)
    def _template_gate(ctx, m, where, args, kwargs, out):
        """The gate as IR ops: Reshape [Cv, N] -> GateLinear (N -> N/2) -> the MLP's neuron (over the
        template axis) -> GateLinear (N/2 -> 1) -> Reshape [Cv] -> GateSoftmax (host) ->
        TemplateGate(x, weights): [T, B, Cv, H, W] -> one step [B, Cv, H, W]."""
        x = _tensor_arg(args, where)
        if x.layout != TB or len(x.shape) != 5:
            raise CaptureError(f"{where}: the template gate needs a [T, B, C, H, W] activation")
        T, B, C, H, W = x.shape
        conv1, neuron, conv2 = m.mlp[0], m.mlp[1], m.mlp[2]
        for conv in (conv1, conv2):
            if not (isinstance(conv, nn.Conv1d) and conv.kernel_size == (1,) and conv.stride == (1,)
                    and conv.padding == (0,) and conv.dilation == (1,) and conv.groups == 1):
                raise CaptureError(f"{where}: the gate MLP must be pointwise Conv1d layers, got {conv!r}")
        rule = _module_rule(neuron)
        if rule is None:
            raise CaptureError(f"{where}: no capture rule for the gate's neuron {type(neuron).__name__}")
        n_tok = H * W
        tokens = ctx.emit(f"{where}.tokens", O.Reshape(shape=(C, n_tok)), [x], source=where, layout=TB,
                          shape=(T, B, C, n_tok))
        h1 = conv1.out_channels
        y = ctx.emit(f"{where}.mlp.0", O.GateLinear(weight=_p(conv1.weight[:, :, 0]), bias=_p(conv1.bias)),
                     [tokens], source=f"{where}.mlp.0", layout=TB, shape=(T, B, C, h1))
        y = rule(ctx, neuron, f"{where}.mlp.1", [y], {}, torch.empty((T, B, C, h1), device="meta"))
        y = ctx.emit(f"{where}.mlp.2", O.GateLinear(weight=_p(conv2.weight[:, :, 0]), bias=_p(conv2.bias)),
                     [y], source=f"{where}.mlp.2", layout=TB, shape=(T, B, C, 1))
        logits = ctx.emit(f"{where}.logits", O.Reshape(shape=(C,)), [y], source=where, layout=TB, shape=(T, B, C))
        weights = ctx.emit(f"{where}.softmax", O.GateSoftmax(), [logits], source=f"{where} (host_gate_softmax)",
                           layout=TB, shape=(T, B, C))
        return ctx.emit(where, O.TemplateGate(), [x, weights], source=where, layout=MERGED,
                        shape=_shape_of(out), steps=1)

    @register_module_rule(L._FrozenBatchNorm)
    def _frozen_bn(ctx, m, where, args, kwargs, out):
        return _bn(ctx, m, where, args, out, frozen=True)

    # SpikeVideoFormer's space-time attention cores (issue 17): SDHA (Eq. 10) and the dot product (Eq. 3)
    from spikedeploy.models import spikevideoformer_blocks as SVB

    def _space_time_attention(ctx, m, where, args, kwargs, out):
        q, k, v = (list(args) + [kwargs[n] for n in ("q", "k", "v")[len(args):]])[:3]
        for t in (q, k, v):
            if not isinstance(t, CValue) or t.layout != TB or not t.name or len(t.shape) != 4:
                raise CaptureError(f"{where}: space-time attention inputs must be [T, B, C, N] activations")
        d = q.shape[2] // int(m.num_heads)
        if isinstance(m, SVB.SpikeHammingAttention):
            op = O.SpikeHammingAttention(num_heads=int(m.num_heads), tokens=str(m.tokens), scale=float(m._scale(d)))
        else:
            op = O.SpikeDotAttention(num_heads=int(m.num_heads), tokens=str(m.tokens), scale=float(m._scale(d)))
        return ctx.emit(where, op, [q, k, v], source=where, layout=TB, shape=_shape_of(out))

    register_module_rule(SVB.SpikeHammingAttention)(_space_time_attention)
    register_module_rule(SVB.SpikeDotAttention)(_space_time_attention)


_register_model_rules()
