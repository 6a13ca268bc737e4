"""The delegate-sdk plugin contract.

A *delegate plugin* teaches the SDK to run part of a PyTorch model on one
backend. It is a module or object whose functions are marked with
``delegate_sdk.hookimpl`` and whose names match the hooks below; it is found
through the ``delegate_sdk`` entry-point group, and its entry-point name is its
backend name::

    # pyproject.toml of your plugin
    [project.entry-points.delegate_sdk]
    mybackend = "delegate_sdk_mybackend.plugin"

    # delegate_sdk_mybackend/plugin.py
    from delegate_sdk import hookimpl, BackendInfo, Claims, CompiledDelegate

    @hookimpl
    def describe() -> BackendInfo: ...

The core calls each *backend hook* only on the plugin that owns the backend in
question, so an implementation never checks "is this call for me?". A hook
implementation may accept fewer arguments than the spec lists (pluggy passes
only those it names); a misspelled hook or argument name is rejected when the
plugin is loaded.

Required hooks: ``describe``, ``claim``, ``preprocess``, ``init``, ``execute``.
Optional: ``validate_options``, ``destroy``, ``reference_execute``, ``conformance_cases``.

Lifecycle of one model::

    describe()                                   # at discovery, and for `delegate-sdk plugins`
    validate_options(options)                    # once per lowering: is this combination of options valid?
    claim(program, nodes, options)               # which nodes you take, and why not the others
    preprocess(program, options, calibration)    # once per partition you won: compile to a blob
    ... the core writes the blob into the artifact; later, maybe on another machine ...
    init(blob, meta, options, sections) -> handle  # once per partition, at load
    execute(handle, inputs) -> outputs           # once per call of the program
    destroy(handle)                              # when the program is dropped

Options: every hook that takes ``options`` receives a ``dict`` already
validated by the core against the ``OptionSpec`` list from ``describe``, with
defaults filled in. It always contains ``"precision"``, one of
``BackendInfo.precisions``.

Precisions come from one vocabulary, ``delegate_sdk.types.PRECISIONS``: float
``fp32``, ``fp16``, ``bf16`` (the dtype the delegate computes in) and quantized
``int8`` (8-bit activations and weights), ``a16w8``, ``int16``, ``a8w4``,
``int4``. A quantized precision gets calibration data in ``preprocess`` and is
judged in quantization steps; a float one is judged in its dtype's ULPs. A name
outside the vocabulary must be declared in ``BackendInfo.precision_specs`` as a
``delegate_sdk.Precision`` saying what it is; an undeclared name (``"half"``,
``"uint8"``) makes the plugin unavailable, with a reason naming it.

What ``delegate-sdk conform`` checks besides numerics (each a FAIL_CONTRACT or
FAIL_CLAIM when broken): every candidate answered exactly once in ``claim``;
inputs never modified by ``execute``; outputs never reused across calls;
``thread_safe=True`` holding under several threads; a dynamic program right at
several sizes; and the artifact loading and running in a fresh process whose
working and temp directories are new and empty, after your compile-time temp
files are gone. Known failures ship as ``expectations.toml`` in your package
(package data), where conform finds them; see
``delegate_sdk.conformance.expectations``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch
    from torch.export import ExportedProgram

    from delegate_sdk.types import BackendInfo, Claims, CompiledDelegate

PROJECT = "delegate_sdk"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def describe() -> BackendInfo:
    """Say who you are and whether you can run here.

    Return a :class:`~delegate_sdk.types.BackendInfo`. Keep it cheap: it is
    called at discovery and by ``delegate-sdk plugins``; do not compile or load
    models. When your toolchain is missing or the host is wrong, return
    ``available=False`` with an ``unavailable_reason`` the user can act on
    (``"onnxruntime-qnn is not installed: pip install delegate-sdk-qnn"``),
    rather than raising.

    ``blob_format_version`` is the version of the blobs you emit now;
    ``loadable_format_versions`` the inclusive range your runtime can still
    load. The core refuses to load an artifact whose blob is outside that
    range, with a clear error, so ``init`` never sees one.

    ``keep_ops`` lists core ATen op names (``"aten.linear.default"``) that you
    would rather see whole than decomposed; the core keeps them in the graph
    it hands to ``claim``. Ops you keep but then refuse run on eager PyTorch.

    ``hosts_ops=True`` says your runtime can also run, on its host CPU and
    inside a partition, ops your accelerator cannot (ExecuTorch's portable
    kernels in the same program, a CPU provider in the same session); see
    ``claim`` for how such nodes are answered.

    ``precisions`` are names from the core vocabulary (see the module
    docstring), or declared in ``precision_specs``. Say ``thread_safe=True``
    only if one handle may really run ``execute`` from several threads at once:
    conformance calls one loaded program from 4 threads and compares with the
    same calls made one at a time.
    """


@hookspec(firstresult=True)
def validate_options(options: dict[str, Any]) -> None:
    """Check a combination of options before anything is claimed. Optional.

    The core has already checked each option on its own against your ``OptionSpec`` list (type, choices,
    range) and filled in defaults; this hook is for what only you know: combinations
    (``system_config`` that does not exist for the chosen ``target``), a value that needs your toolchain to
    judge. Raise ``ValueError`` with a sentence naming the options and the fix; the user gets one
    ``OptionError`` (exit code 2) before any node is claimed, instead of one refusal per node. Return
    ``None`` when the options are fine.
    """


@hookspec(firstresult=True)
def claim(program: ExportedProgram, nodes: list[torch.fx.Node], options: dict[str, Any]) -> Claims:
    """Decide which of ``nodes`` your backend takes.

    ``program`` is the whole model as a core-ATen ``ExportedProgram`` (read
    it, never modify it). ``nodes`` are the candidate ``call_function`` nodes of
    ``program.graph`` that no higher-priority backend took; each has
    ``node.meta["val"]`` (a fake tensor, or a tuple of them) giving dtype and
    shape. Use :mod:`delegate_sdk.support` to tell weights (constants) from
    activations.

    Return :class:`~delegate_sdk.types.Claims` that names every candidate
    exactly once: in ``claimed``, or in ``refused`` with a
    :class:`~delegate_sdk.types.ReasonCode` and a sentence
    (``"conv kernel 9x9 exceeds the 8x8 limit"``). The user sees these
    reasons in ``delegate-sdk inspect``. A candidate left out, named twice, or
    refused with an empty sentence is a contract violation: lowering stops with
    a ``ContractError`` naming the nodes (FAIL_CLAIM in conformance).

    Hosted ops: when the user asked for them (``options["hosted_ops"]`` is
    true; the key is there only if ``BackendInfo.hosts_ops``), you may answer
    a node you cannot accelerate but your runtime can run on its host CPU in
    ``Claims.hosted`` instead of ``refused``. The core places hosted nodes in
    your partitions like claimed ones, so that partitions merge across them,
    drops a partition that would hold no accelerated node, and counts hosted
    nodes apart everywhere (``inspect``, ``Program.summary()``, conformance).

    Claim a node only if ``preprocess`` will compile it at
    ``options["precision"]`` whatever neighbours it ends up with: the core
    cuts your claimed nodes into cycle-free partitions, and a partition you
    then fail to compile fails conformance (and a lowering onto your backend
    alone). In a lowering onto several backends its nodes fall to the next
    backend or eager PyTorch, with your error in the program's summary, so
    users see a claim you could not honour. Say what cannot stand alone with
    ``requires`` / ``group`` in a ``delegate_sdk.support.ClaimTable``.
    """


@hookspec(firstresult=True)
def preprocess(program: ExportedProgram, options: dict[str, Any],
               calibration: list[tuple[torch.Tensor, ...]] | None) -> CompiledDelegate:
    """Compile one partition into an opaque blob.

    ``program`` is a self-contained ``ExportedProgram`` holding only nodes you
    claimed (those you answered as hosted carry
    ``node.meta["delegate_sdk_hosted"] = True``, ``types.HOSTED_META``). Its
    user inputs are the tensors that cross into the partition, in the order
    ``execute`` will receive them; weights and constants used only inside the
    partition are its parameters/buffers/constants, yours to bake into the
    blob. Its outputs are what ``execute`` must return, in order.

    ``calibration`` is ``None`` for float precisions. For quantized precisions
    it is a list of input tuples for *this partition* (same order as the user
    inputs), captured by the core from eager runs of the user's calibration
    data; use it to choose activation ranges.

    Return a :class:`~delegate_sdk.types.CompiledDelegate`. ``meta`` must be
    JSON-serialisable (it is stored in the artifact and handed back to
    ``init``); report each output's quantization in ``output_quant`` for
    quantized precisions (conformance judges errors in those steps), and your
    toolchain's performance estimate in ``perf`` when it has one.

    Put bulky data that other partitions may hold too (weights, a data map
    your runtime loads beside the program) in ``sections`` instead of the blob:
    the artifact stores each distinct section once, by content, and ``init``
    gets them back by name. An unrolled RNN whose 30 partitions use the same
    weights then ships them once.

    Raise any exception to fail; the core reports it naming your plugin and
    the partition. Write temporary files under a ``tempfile`` directory you
    remove, never the working directory; log through ``logging``, never print.

    The blob (with ``meta``) must be all that ``init`` needs: the artifact
    ships to other machines. Conformance removes the temp area ``preprocess``
    ran in and loads the artifact in a fresh process with new, empty working
    and temp directories; a file your runtime reads that is not part of the
    artifact or of an installed package is named there as a failure.
    """


@hookspec(firstresult=True)
def init(blob: bytes, meta: dict[str, Any], options: dict[str, Any], sections: dict[str, bytes]) -> Any:
    """Load a compiled blob and return a handle (any object) for ``execute``.

    Called once per partition when a program is lowered or loaded, possibly in
    another process or on another machine than ``preprocess`` ran; only your
    runtime may be installed there, not your compiler. ``meta`` and
    ``sections`` are what ``preprocess`` returned in its ``CompiledDelegate``
    (``sections`` is ``{}`` when it returned none; partitions that returned
    equal sections may share one ``bytes`` object, which you must not mutate).
    Check that a section you need is there before handing the blob to native
    code: a native loader missing its data tends to crash, not raise.
    """


@hookspec(firstresult=True)
def execute(handle: Any, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Run a loaded blob.

    ``inputs`` are exactly the partition's user inputs (dtype and shape already
    checked by the core), possibly non-contiguous. They belong to the caller:
    never modify them (work on a copy if your kernel computes in place).
    Return a list with one tensor per partition output, with the dtype and
    shape of that output; the core checks this and reports a contract failure
    otherwise. Return new tensors on every call: a buffer you hand out again
    on the next call overwrites the caller's earlier result.

    For a dynamic program, ``execute`` is called at any size within the
    exported ranges, in any order, on one handle: never specialise on the
    first shape you see.

    Unless ``BackendInfo.thread_safe`` is true, the core never calls
    ``execute`` on one handle from two threads at once.
    """


@hookspec(firstresult=True)
def destroy(handle: Any) -> None:
    """Release a handle returned by ``init``. Optional.

    Called once per handle when the program is closed or garbage collected,
    never while an ``execute`` on that handle is running. Free native
    sessions, memory and temporary files here; an exception is logged and
    otherwise ignored.
    """


@hookspec(firstresult=True)
def reference_execute(blob: bytes, meta: dict[str, Any], options: dict[str, Any],
                      inputs: list[torch.Tensor], sections: dict[str, bytes]) -> list[torch.Tensor] | None:
    """Run the same quantized computation on a trusted CPU reference. Optional.

    For quantized precisions, conformance compares your delegate against eager
    PyTorch in output quantization steps. When you can run the *quantized*
    model on a reference implementation (e.g. a QDQ model on the ONNX Runtime
    CPU provider), return its outputs here: conformance then separates
    quantization error (reference vs eager) from backend error (delegate vs
    reference). Bool and integer outputs (comparisons, argmax, topk indices)
    are then judged against the reference exactly, so that a result that
    quantization itself flips is not counted against your backend. Return
    ``None`` when you have no reference for this blob.
    """


@hookspec
def conformance_cases() -> list[Any]:
    """Extra conformance cases your backend contributes. Optional.

    Return a list of ``delegate_sdk.conformance.cases.OpCase`` /
    ``ModelCase`` objects; ``delegate-sdk conform --plugin <you>`` runs them
    beside the built-in corpus (case ids must not collide with built-in ones;
    prefix them with your backend name). Called only on the plugin under
    test.
    """
