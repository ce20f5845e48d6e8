"""Export any sermodels model to ONNX, with its front-end inside the graph, for onnxruntime and audonnx.

``sermodels export onnx ID -o DIR`` (:func:`export_onnx`) writes:

- ``model.onnx``: one self-contained file (the weights inside, no external data). Input ``signal``: float32
  ``(batch, samples)``, mono waveforms at the model's sample rate, both axes dynamic, **every row a whole clip**
  (a batch holds clips of one length; there is no ``lengths`` input and no padding). Outputs: one per head, named
  after the head, holding what ``model(signal, head=H)`` returns: class logits (softmax gives the probabilities
  ``predict`` reports), an SVM's decision values, or dimension values; ``(batch, size)`` for an utterance-level
  head, ``(batch, frames, size)`` for a frame-level one.
- ``model.clip.onnx``: the same graph with the batch fixed at 1, and ``model.yaml`` describing it in the layout
  audEERING's audonnx loads (``audonnx.load(DIR)``): audonnx reshapes its input to the node's shape, which works
  for ``(1, samples)`` but not for two dynamic axes; the labels of every output node are the head's names.
- ``export.json``: the model id, architecture and configuration, sample rate, minimum duration, every head's
  output spec (:mod:`sermodels.outputs`) and label names, the sha256 of the weights that were exported
  (:func:`sermodels.runtime.weights_digest`), the opset and the software versions; the same text is stored in
  ``model.onnx``'s metadata (``sermodels.export``), beside ``sample_rate`` and ``labels.<head>``.

How: ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript). The TorchScript exporter cannot: it has no
complex STFT. The model is traced on whole rows (``lengths=None``), the path on which every family computes its
shapes from the input's shape alone (:mod:`sermodels._tracing`: value checks run in eager mode only; the recurrent
models run their masked BLSTMs without packing). Why whole rows and not ``(signal, lengths)``: several families
make per-batch decisions that a graph cannot hold (the adapted CNNs run each width of a padded batch apart, so that
a clip's output does not depend on its batch-mates), and a batch of equal-length clips is what a deployment makes
anyway (fixed windows of a long recording). ``predict --backend onnx`` (:mod:`sermodels.deploy.onnx_backend`) runs
a padded batch as groups of equal lengths.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sermodels._io import atomic_write_text, sha256_of, software_versions
from sermodels._version import __version__
from sermodels.models.base import SERModel
from sermodels.runtime import weights_digest

EXPORT_FORMAT = 1
MODEL_FILE = "model.onnx"
CLIP_FILE = "model.clip.onnx"
AUDONNX_FILE = "model.yaml"
INFO_FILE = "export.json"
INPUT_NAME = "signal"
METADATA_KEY = "sermodels.export"
# The example the graph is traced on: two rows of this many seconds (or twice the model's minimum), seeded
# noise. Its values do not matter (no decision in the traced path depends on them); its shape is made dynamic.
TRACE_SECONDS = 0.5
TRACE_SEED = 0


class WholeClips(nn.Module):
    """The traced graph: ``signal (batch, samples)``, every row a whole clip -> one output per head, in order."""

    def __init__(self, model: SERModel, heads: Sequence[str]):
        super().__init__()
        self.model = model
        self.heads = list(heads)

    def forward(self, signal: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model(signal, None, head=head) for head in self.heads)


def export_onnx(
    model: SERModel,
    folder: str | Path,
    *,
    heads: Sequence[str] | None = None,
    model_id: str | None = None,
    opset: int | None = None,
) -> Path:
    """Write ``model`` (a copy on the CPU, in eval mode; ``model`` itself is not touched) into ``folder`` as the
    files of the module docstring, for ``heads`` (default: all, in the model's order). Returns ``folder/model.onnx``.
    The files are written into a temporary folder beside ``folder`` and moved in at the end, replacing only the files
    of an earlier export; ``export.json`` goes first out and last in, so a folder with an ``export.json`` holds a
    complete export (its ``files`` give the sha256 of the others). A failed export leaves ``folder`` untouched."""
    heads = _check_heads(model, heads)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: exists and is not a folder")
    network = copy.deepcopy(model).to("cpu").eval()
    proto = _trace(network, heads, opset)
    info = export_info(network, heads, model_id, proto)
    _add_metadata(proto, info)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        staging = Path(tmp)
        _save(proto, staging / MODEL_FILE)
        _save(_fixed_batch(proto, 1), staging / CLIP_FILE)
        atomic_write_text(staging / AUDONNX_FILE, audonnx_yaml(network, heads, CLIP_FILE))
        info["files"] = {name: sha256_of(staging / name) for name in (MODEL_FILE, CLIP_FILE, AUDONNX_FILE)}
        atomic_write_text(staging / INFO_FILE, json.dumps(info, indent=2) + "\n")
        folder.mkdir(exist_ok=True)
        (folder / INFO_FILE).unlink(missing_ok=True)
        for name in (MODEL_FILE, CLIP_FILE, AUDONNX_FILE, INFO_FILE):
            shutil.move(str(staging / name), str(folder / name))
    return folder / MODEL_FILE


def _check_heads(model: SERModel, heads: Sequence[str] | None) -> list[str]:
    chosen = list(model.heads) if heads is None else [model.resolve_head(h) for h in heads]
    if not chosen:
        raise ValueError("no heads to export")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"heads named twice: {chosen}")
    if INPUT_NAME in chosen:
        raise ValueError(f"a head named {INPUT_NAME!r} would clash with the graph's input")
    return chosen


def trace_example(model: SERModel, rows: int = 2) -> Tensor:
    """The traced example ``(rows, samples)``: seeded noise, ``TRACE_SECONDS`` (or the model's
    ``onnx_trace_seconds``), at least twice the model's minimum duration."""
    seconds = getattr(model, "onnx_trace_seconds", None) or TRACE_SECONDS
    seconds = max(seconds, 2 * float(getattr(model, "min_duration", 0.0)))
    generator = torch.Generator().manual_seed(TRACE_SEED)
    return 0.1 * torch.randn(rows, int(seconds * model.sample_rate), generator=generator)


def _trace(model: SERModel, heads: list[str], opset: int | None):
    """``torch.onnx.export(dynamo=True)`` of :class:`WholeClips` -> the ``onnx.ModelProto``."""
    dynamic = torch.export.Dim.DYNAMIC
    options: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    # The exporter reports each step on stdout and warns about every guard it adds on the symbolic shapes.
    quiet = io.StringIO()
    level = logging.getLogger("torch").level
    logging.getLogger("torch").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                WholeClips(model, heads),
                (trace_example(model),),
                dynamo=True,
                external_data=False,
                input_names=[INPUT_NAME],
                output_names=heads,
                dynamic_shapes={"signal": {0: dynamic, 1: dynamic}},
                verbose=False,
                **options,
            )
    except Exception as err:
        raise RuntimeError(f"ONNX export of {model.arch} failed: {err}") from err
    finally:
        logging.getLogger("torch").setLevel(level)
    proto = program.model_proto
    _name_axes(proto, heads)
    return proto


def _name_axes(proto, heads: list[str]) -> None:
    """Give the dynamic axes readable names: ``batch`` and ``samples`` on the input, ``batch`` (and ``frames``) on
    every output, so that the files say what each axis is."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for position, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                continue
            if position == 0:
                dim.dim_param = "batch"
            elif value.name == INPUT_NAME:
                dim.dim_param = "samples"
            elif len(dims) == 3 and position == 1:
                dim.dim_param = "frames"


def export_info(model: SERModel, heads: list[str], model_id: str | None, proto=None) -> dict[str, Any]:
    """What ``export.json`` and the graph's metadata say about the export (module docstring)."""
    specs = {head: model.output_spec(head) for head in heads}
    return {
        "format": EXPORT_FORMAT,
        "model_id": model_id,
        "arch": model.arch,
        "config": model.config(),
        "sample_rate": int(model.sample_rate),
        "min_duration": float(getattr(model, "min_duration", 0.0)),
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", "samples"],
            "meaning": "mono waveforms at sample_rate; every row a whole clip (no padding, no lengths input)",
        },
        "outputs": {
            head: {
                "labels": list(model.label_names(head)),
                "spec": spec.to_json(),
                "values": _output_meaning(spec),
            }
            for head, spec in specs.items()
        },
        "weights_sha256": weights_digest(model),
        "opset": None if proto is None else _opset(proto),
        "exporter": "torch.onnx.export(dynamo=True)",
        "software": {**software_versions(), "sermodels": __version__, **_onnx_versions()},
    }


def _output_meaning(spec) -> str:
    if spec.kind == "categories":
        return "decision values (SVM)" if spec.score == "decision" else "logits (softmax: class probabilities)"
    return "values" if spec.kind == "dimensions" else "embedding"


def _opset(proto) -> int | None:
    return next((int(entry.version) for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)


def _onnx_versions() -> dict[str, str]:
    import onnx

    versions = {"onnx": onnx.__version__}
    with contextlib.suppress(ImportError):
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return versions


def _add_metadata(proto, info: dict[str, Any]) -> None:
    entries = {METADATA_KEY: json.dumps(info), "sample_rate": str(info["sample_rate"])}
    entries.update({f"labels.{head}": json.dumps(out["labels"]) for head, out in info["outputs"].items()})
    del proto.metadata_props[:]
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "sermodels", __version__
    name, rate = info["model_id"] or info["arch"], info["sample_rate"]
    proto.doc_string = f"{name}: speech emotion recognition on raw {rate} Hz audio (sermodels)"


def _fixed_batch(proto, size: int):
    """A copy of ``proto`` whose input and outputs declare a batch of ``size`` (the graph itself is unchanged)."""
    fixed = copy.deepcopy(proto)
    for value in [*fixed.graph.input, *fixed.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = size
    return fixed


def _save(proto, path: Path) -> None:
    import onnx

    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path))


def audonnx_yaml(model: SERModel, heads: list[str], path: str) -> str:
    """``model.yaml`` as audonnx writes it (an audobject ``Model`` with its ``path``, the ``labels`` of each output
    node and no transform: the graph takes the raw signal). No version pin on the class, so any audonnx >= 0.7
    that reads the layout loads it."""
    lines = ["$audonnx.core.model.Model:", f"  path: {path}", "  labels:"]
    for head in heads:
        lines.append(f"    {json.dumps(head)}:")
        lines += [f"    - {json.dumps(label)}" for label in model.label_names(head)]
    lines.append("  transform: null")
    return "\n".join(lines) + "\n"


def read_export_info(folder_or_file: str | Path) -> dict[str, Any]:
    """The export description of an export folder (``export.json``) or of a ``.onnx`` file (its metadata)."""
    path = Path(folder_or_file)
    if path.is_dir():
        info_file = path / INFO_FILE
        if not info_file.is_file():
            raise FileNotFoundError(f"{path}: no {INFO_FILE} (not a sermodels ONNX export folder)")
        return json.loads(info_file.read_text())
    import onnx

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - onnx raises DecodeError and others for a file that is not ONNX
        raise ValueError(f"{path}: not an ONNX model ({err})") from err
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path}: not exported by sermodels (no {METADATA_KEY!r} metadata)")
    return json.loads(metadata[METADATA_KEY])


# How far onnxruntime's scores (what predict reports: probabilities, decision values, values) may be from torch's.
PARITY_TOLERANCE = 1e-4
# Deep Spectrum quantises its input: each spectrogram pixel becomes one of the colour map's 256 entries (a floor of
# the normalised dB value), so a difference of 1e-6 in one STFT bin (onnxruntime's DFT vs torch's FFT) can move a
# pixel one colour step, and the CNN passes the step on (measured on real speech: probabilities up to 0.017 apart).
QUANTISED_PARITY_TOLERANCE = {"deep_spectrum": 0.05}


def parity_tolerance(model: SERModel) -> float:
    return QUANTISED_PARITY_TOLERANCE.get(model.arch, PARITY_TOLERANCE)


def parity(model: SERModel, path: str | Path, waveforms: Tensor) -> dict[str, float]:
    """Largest difference per head between the scores (:meth:`~sermodels.models.base.SERModel.scores`) of the
    graph at ``path`` in onnxruntime and of ``model`` in torch (in eval mode) on ``waveforms (batch, samples)``
    (whole clips of one length), both on the CPU in fp32."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    heads = [output.name for output in session.get_outputs()]
    signal = waveforms.detach().float().cpu()
    outputs = session.run(heads, {INPUT_NAME: signal.numpy()})
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = [model(signal.to(_device_of(model)), None, head=head).float().cpu() for head in heads]
    finally:
        model.train(was_training)
    differences = {}
    for head, got, want in zip(heads, outputs, expected):
        if tuple(got.shape) != tuple(want.shape):
            raise RuntimeError(f"head {head!r}: onnxruntime gave shape {got.shape}, torch {tuple(want.shape)}")
        got_scores = model.scores(torch.from_numpy(got), head).float()
        differences[head] = float((got_scores - model.scores(want, head).float()).abs().max())
    return differences


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))
