"""Time-continuous models after training: whole-session traces, and the post-processing chain fitted on dev.

D4.2 §4.5.2 and §5.3 follow every continuous model with a chain of median filtering, centring, scaling and a time
shift, each step kept only when it raises the development CCC, then applied unchanged to the test partition
(:mod:`sermodels.postprocess`). Here the chain of a trained frame-level model is fitted on the dev sessions of the
data module it was trained on (scaling uses the standard deviation of the *training* gold traces) and stored in the
model's config.json, so ``predict`` and ``evaluate`` apply it (:meth:`~sermodels.models.base.SERModel.finish_frames`).

    python -m sermodels.training.continuous RUN_DIR --out RELEASE_DIR [--cache DIR]
    python -m sermodels.training.continuous RUN_DIR --tables      # the run's session tables, "name path" per line

``RUN_DIR`` is a release folder written by ``sermodels train`` (its ``recipe_resolved.yaml`` names the data);
``RELEASE_DIR`` receives the same weights with the chain in config.json, and the training log.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sermodels.checkpoint import RESERVED_CONFIG_KEYS, load_folder, read_config
from sermodels.data.targets import aligned_length
from sermodels.models.base import SERModel
from sermodels.pipelines.predict import run_predictions
from sermodels.postprocess import PostProcessing, fit_postprocessing, trace_std
from sermodels.training.export import rerelease


def session_traces(
    model: SERModel,
    items: Sequence,
    *,
    head: str | None = None,
    postprocess: bool = False,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(predictions, gold)``: per item, the head's frames ``(T, D)`` over the whole recording (raw unless
    ``postprocess``) and the item's trace at the head's frame rate, both cut to their common first frames (a
    difference of more than the trace's tolerance is an error, as in ``evaluate``)."""
    head = model.resolve_head(head)
    spec = model.output_spec(head)
    if spec.level != "frame":
        raise ValueError(f"head {head!r} is utterance-level; traces need a frame-level head")
    missing = [str(item.path) for item in items if getattr(item, "trace", None) is None]
    if missing:
        raise ValueError(f"items without a trace: {missing[:5]}")
    result = run_predictions(
        model, [Path(item.path) for item in items], head=head, batch_size=batch_size, device=device,
        progress=False, postprocess=postprocess,
    )  # fmt: skip
    if result.failures:
        raise ValueError(f"could not predict: {result.failures[:5]}")
    predictions, gold = [], []
    for (is_row, row), item in zip(result.order, items):
        if not is_row:
            raise ValueError(f"could not predict {item.path}")
        output = result.outputs[row].double().numpy()
        target = item.trace.frames(spec.frame_rate).astype(np.float64)
        try:
            frames = aligned_length(output.shape[0], target.shape[0], item.trace.tolerance(spec.frame_rate))
        except ValueError as err:
            raise ValueError(f"{item.path}: {err} (is the trace the one of this audio?)") from None
        predictions.append(output[:frames])
        gold.append(target[:frames])
    return predictions, gold


def fit_for_model(
    model: SERModel, dev_items: Sequence, train_items: Sequence, *, head: str | None = None, batch_size: int = 4
) -> PostProcessing:
    """The chain of ``head`` fitted on the raw dev traces, scaling to the training traces' standard deviation."""
    head = model.resolve_head(head)
    spec = model.output_spec(head)
    predictions, gold = session_traces(model, dev_items, head=head, batch_size=batch_size)
    train_gold = [item.trace.frames(spec.frame_rate).astype(np.float64) for item in train_items]
    names = list(spec.names)
    return fit_postprocessing(predictions, gold, spec.frame_rate, names, gold_std=trace_std(train_gold, names))


#: What a model card of a session-trained model must say (config.json ``limitations``, read by ``sermodels card``).
SESSION_LIMITATIONS = [
    "Trained and scored on pseudo-sessions (sermodels.data.sessions): acted utterances of one speaker spliced into "
    "60-300 s sessions, with arousal/valence traces placed per emotion category and smoothed. The targets are "
    "synthetic, not continuous ratings by raters; the traces change only between utterances.",
    "Claims about spontaneous speech, real rater agreement or rater lag do not carry over from these scores.",
]


def run_data(run: str | Path, cache_dir: str | None = None):
    """The (set up) session data module that the run ``run`` was trained on, from its ``recipe_resolved.yaml``."""
    import yaml

    from sermodels.data.sessions import SessionDataModule

    recipe = yaml.safe_load((Path(run) / "recipe_resolved.yaml").read_text())
    arguments = dict(recipe["data"]["init_args"])
    if cache_dir is not None:
        arguments["cache_dir"] = cache_dir
    data = SessionDataModule(**arguments)
    data.setup("fit")
    return data


def release_with_postprocessing(
    run: str | Path, out: str | Path, cache_dir: str | None = None, store_dtype: str | None = None
) -> PostProcessing:
    """Fit the chain of a trained session model (``run``) on its dev sessions and write ``out`` with it.

    ``store_dtype`` ("float16"): store the release's floating-point weights in that dtype (half the size of float32;
    :func:`~sermodels.checkpoint.load_folder` loads them into the model's float32 parameters). The chain is fitted
    on the run's own weights."""
    run, out = Path(run), Path(out)
    data = run_data(run, cache_dir)
    model = load_folder(run)
    parts = {part: [i for name in data.corpus_names for i in data.partitions[name][part]] for part in ("train", "dev")}
    chain = fit_for_model(model, parts["dev"], parts["train"])
    model.set_postprocessing(model.default_head, chain)
    config = read_config(run)
    extra = {key: value for key, value in config.items() if key not in RESERVED_CONFIG_KEYS}
    if isinstance(extra.get("training"), dict):  # the corpora as the data module describes them now (licences)
        extra["training"]["corpora"] = [{k: v for k, v in c.items() if k != "root"} for c in data.info()["corpora"]]
    extra["limitations"] = list(
        dict.fromkeys([*extra.get("limitations", []), *SESSION_LIMITATIONS, *_schedule_note(extra)])
    )
    rerelease(model, run, out, extra, store_dtype)
    return chain


def _schedule_note(config: dict) -> list[str]:
    """A card line for a model trained on a CPU schedule (its steps and batch, from the training record)."""
    training = config.get("training") or {}
    run = training.get("schedule_run") or {}
    if "CPU" not in str(run.get("accelerator", "")):
        return []
    return [
        f"Trained on CPU for {run.get('optimizer_steps')} optimiser steps of {training.get('batch_size')} sequences "
        f"({run.get('wall_seconds')} s): a reduced schedule; a GPU schedule (more steps, batches of 50 as in D4.2 "
        "§5.3) should do better."
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sermodels.training.continuous", description=__doc__.split("\n")[0])
    parser.add_argument("run", help="release folder of a trained session model (sermodels train --output)")
    parser.add_argument("--out", help="folder for the release with its post-processing chain")
    parser.add_argument("--cache", default=None, help="session cache folder (default: the recipe's)")
    parser.add_argument("--store-dtype", choices=["float16", "bfloat16"], help="store the weights in this dtype")
    parser.add_argument("--tables", action="store_true", help="print the run's session tables (name path) and stop")
    args = parser.parse_args(argv)
    if args.tables:
        data = run_data(args.run, args.cache)
        for name in data.corpus_names:
            print(name, data.roots[name])
        return 0
    if not args.out:
        parser.error("--out is required")
    chain = release_with_postprocessing(args.run, args.out, args.cache, args.store_dtype)
    for name, steps in chain.to_json()["steps"].items():
        print(f"{name}: {steps}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
