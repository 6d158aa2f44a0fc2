"""How a simulated neuron's forward pass runs: its precision and its runtime (``[neuron] precision / runtime``).

- ``precision``: ``"fp32"``; ``"bf16"`` or ``"fp16"`` run the pass under ``torch.autocast``, which does matrix
  products and convolutions in the low precision and keeps normalisations and reductions in fp32. fp16 runs
  only on a CUDA GPU (CPUs have no fp16 matrix kernels worth having).
- ``runtime``: ``"eager"`` (PyTorch as written); ``"compiled"`` (``torch.compile`` of the model's parts up to
  the units' layers, :func:`compile_around`; the first passes compile, a minute or more on a CPU); ``"onnxruntime"``
  (the pass up to the units' layers exported with ``torch.onnx`` to a cached file and run by ONNX Runtime,
  fp32 only).

Every runtime reads the same units as :func:`simulators.neuron.read_units`: the pass ends once the units'
layers have run, so the exported or compiled graph holds only the model up to them.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from protocols.spec import NEURON_PRECISIONS, NEURON_RUNTIMES
from simulators.layer_reads import read_layers
from simulators.onnx_vit import cache_dir, write_cache_file
from simulators.units import ResolvedUnit

__all__ = ["AUTOCAST_DTYPES", "NEURON_PRECISIONS", "NEURON_RUNTIMES", "Forward", "UnitPass", "build_forward",
           "check_choice", "compile_around", "default_runtime"]

#: The dtype each low precision runs its matrix products in.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Bump when the exported graph changes, so stale ONNX caches are not reused.
_EXPORT_VERSION = 1
_OPSET = 17

#: Preprocessed images (N, 3, S, S) in -> unit values (N, units) out, as float32 or wider.
Forward = Callable[[torch.Tensor], torch.Tensor]


def default_runtime(precision: str, device: torch.device) -> str:
    """The runtime a session's simulated neuron runs when its protocol names none.

    ONNX Runtime for fp32 on a CPU: there bench/precision.py measured it 1.06x (ViT-S/14) and 2.2x
    (EfficientNet-Lite0) the images per second of eager, with Spearman 1.0 against eager on 1,000 images and
    the demo's dry run within eager's seed-to-seed spread (issue 18's rule for a new default). Eager
    everywhere else: bf16 and fp16 run under torch.autocast, which ONNX Runtime cannot, and on a GPU ONNX
    Runtime needs onnxruntime-gpu. On an H200 "compiled" was 1.02x eager (ViT-S/14), within eager's own
    run-to-run spread, for 14-42 s of compiling per session (README, "GPU"): eager stays.
    """
    return "onnxruntime" if precision == "fp32" and torch.device(device).type == "cpu" else "eager"


def check_choice(precision: str, runtime: str, device: torch.device) -> None:
    """Refuse a precision or runtime this device or runtime cannot run, naming the ``[neuron]`` field."""
    if precision not in NEURON_PRECISIONS:
        raise ValueError(f"[neuron] precision must be one of {list(NEURON_PRECISIONS)}, got {precision!r}")
    if runtime not in NEURON_RUNTIMES:
        raise ValueError(f"[neuron] runtime must be one of {list(NEURON_RUNTIMES)}, got {runtime!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f'[neuron] precision = "fp16" runs only on a CUDA GPU; this neuron is on {device}: '
                         f'use "fp32" or "bf16"')
    if runtime == "onnxruntime" and precision != "fp32":
        raise ValueError(f'[neuron] runtime = "onnxruntime" runs fp32 only (ONNX Runtime has no bf16 matrix '
                         f'kernels on a CPU), got precision = {precision!r}')
    if runtime == "onnxruntime" and device.type not in ("cpu", "cuda"):
        raise ValueError(f'[neuron] runtime = "onnxruntime" runs on cpu or cuda, not {device}')


class UnitPass(nn.Module):
    """``model`` read at ``units``: images in, (N, units) out, the pass cut short after the last needed layer.

    One module for every runtime: eager and compiled call it (:func:`compile_around` compiles the model's
    parts around it), and ``torch.onnx`` traces it (the trace holds only the operations that ran, so the
    exported graph ends at the units' layers). Layers are read by :func:`simulators.layer_reads.read_layers`,
    a module that runs several times per pass on its last call; reads are cloned, since later in-place ops
    (e.g. ReLU(inplace=True)) would overwrite them.
    """

    def __init__(self, model: nn.Module, units: Sequence[ResolvedUnit], stop_early: bool = True) -> None:
        super().__init__()
        self.model = model
        self.units = list(units)
        self.stop_early = stop_early
        self._by_layer: dict[str, list[int]] = {}
        for i, unit in enumerate(self.units):
            self._by_layer.setdefault(unit.address.layer, []).append(i)
        self._calls = {layer: self.units[idx[0]].n_calls for layer, idx in self._by_layer.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: list[torch.Tensor | None] = [None] * len(self.units)

        def read(layer: str, output: torch.Tensor) -> None:
            for i in self._by_layer[layer]:
                values[i] = self.units[i].read(output).clone()

        read_layers(self.model, x, self._calls, read, stop_early=self.stop_early)
        missing = [str(self.units[i].address) for i, v in enumerate(values) if v is None]
        if missing:
            raise RuntimeError(f"layers never ran in the forward pass: {missing}")
        return torch.stack(values, dim=1)


def build_forward(model: nn.Module, units: Sequence[ResolvedUnit], *, precision: str, runtime: str,
                  device: torch.device, model_key: str, input_size: int) -> Forward:
    """The forward pass of ``model`` read at ``units`` under ``precision`` and ``runtime``.

    ``model_key`` names the model and its weights (for the ONNX cache file); ``input_size`` is its input side.
    """
    check_choice(precision, runtime, device)
    if runtime == "onnxruntime":
        return _onnxruntime_forward(UnitPass(model, units), device, model_key, input_size)
    if runtime == "compiled":
        compile_around(model, [u.address.layer for u in units])
    run: Forward = UnitPass(model, units)
    if precision == "fp32":
        return run
    dtype = AUTOCAST_DTYPES[precision]

    def autocast_forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=dtype):
            return run(x).float()

    return autocast_forward


def compile_around(model: nn.Module, layers: Sequence[str]) -> None:
    """``torch.compile`` every part of ``model`` (in place) that neither is nor holds one of ``layers``.

    The read layers and the modules holding them stay eager, so their hooks and the early stop (an exception,
    which dynamo cannot carry through a compiled frame: it falls back to eager and loses the hooks' values)
    run as Python; everything between them is compiled, e.g. whole ViT blocks before the unit's. Parts after
    the last read layer never run, so they are never compiled.
    """
    def holds(path: str) -> bool:
        return any(layer == path or layer.startswith(path + ".") for layer in layers)

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if holds(path):
                visit(path, child)
            elif next(child.parameters(), None) is not None:  # parameter-free parts are too small to pay
                child.compile()

    visit("", model)


def _onnx_file(unit_pass: UnitPass, model_key: str, input_size: int) -> Path:
    """The cached ONNX export of ``unit_pass`` (exported on first use; written to a temporary file, renamed)."""
    key = "|".join([model_key, str(input_size), *(str(u.address) for u in unit_pass.units),
                    torch.__version__, str(_OPSET)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    target = cache_dir() / "onnx" / f"{model_key.split('|')[0]}-{digest}-v{_EXPORT_VERSION}.onnx"
    if target.is_file():
        return target

    def export(tmp: str) -> None:
        example = torch.rand(2, 3, input_size, input_size, device=next(unit_pass.model.parameters()).device)
        # The TorchScript exporter, on purpose (it warns that it is the legacy one): it traces what runs,
        # ending at the units' layers, where torch.export would need the early stop rewritten, and onnxscript.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(unit_pass, (example,), tmp, input_names=["images"], output_names=["units"],
                              dynamic_axes={"images": {0: "n"}, "units": {0: "n"}}, opset_version=_OPSET,
                              dynamo=False)

    write_cache_file(target, export)
    return target


def _onnxruntime_forward(unit_pass: UnitPass, device: torch.device, model_key: str, input_size: int) -> Forward:
    import onnxruntime as ort

    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise ValueError(f'[neuron] runtime = "onnxruntime" on {device} needs ONNX Runtime\'s {provider}; this '
                         f'install has {ort.get_available_providers()} (pip install onnxruntime-gpu for CUDA)')
    path = _onnx_file(unit_pass, model_key, input_size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many cores as torch is allowed, no more
    session = ort.InferenceSession(str(path), options, providers=[provider])

    def forward(x: torch.Tensor) -> torch.Tensor:
        (out,) = session.run(None, {"images": x.detach().float().cpu().numpy()})
        return torch.from_numpy(out)

    return forward
