"""The released BLSTM feature enhancer (D4.2 §3): the "mixed" strategy, one enhancer for every degradation.

    .venv/bin/python recipes/blstm_enhancer/release.py [--out checkpoints/blstm_enhancer.sessions_mixed]
        [--snrs 0 12] [--max-epochs 30] [--cache DIR]

The same data, conditions and training as the mixed enhancer of ``benchmarks/continuous_enhancement.py`` (whose
functions it uses): the train pseudo-sessions of the four corpora, each degraded in every condition (white, pink,
brown noise and babble at each SNR; the phone band and a synthetic room response) plus the clean sessions, paired
with the clean MFCCs; early stopping on dev. The release holds the weights and the standardisation statistics;
``metrics.json`` gives, per condition and on the test sessions, the MSE of the unenhanced and the enhanced MFCCs to
the clean ones (in the clean standardised space), measured here. About 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import continuous_enhancement as bench  # noqa: E402

from sermodels.card import write_model_card  # noqa: E402
from sermodels.checkpoint import save_pretrained  # noqa: E402
from sermodels.data.sessions import SessionConfig  # noqa: E402
from sermodels.degrade import Degradation, conditions  # noqa: E402
from sermodels.models.enhancer import BLSTMEnhancer  # noqa: E402
from sermodels.training.enhancer import feature_mse  # noqa: E402

SOURCES = ("emodb", "ravdess", "emovo", "urdu")

DESCRIPTION = (
    "BLSTM denoising autoencoder of 13 MFCCs (MixedEmotions D4.2 §3: BLSTM 30 -> BLSTM 30 -> linear 13), trained "
    "to map MFCCs of degraded speech to those of the clean speech ('mixed' strategy: one enhancer for white, pink "
    "and brown noise, babble, a 300-3400 Hz phone band and synthetic room responses, and clean speech). Input: a "
    "16 kHz waveform; output: enhanced MFCC frames every 10 ms (head 'mfcc'), to feed a back-end trained on clean "
    "speech."
)
LIMITATIONS = [
    "The degradations are synthetic (noise generated here, synthetic exponentially decaying room responses), not "
    "recorded noise or measured impulse responses; the speech is acted (pseudo-sessions of four acted corpora).",
    "An enhancer helps a back-end trained on clean features; it is not a speech enhancer for listening.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "checkpoints" / "blstm_enhancer.sessions_mixed")
    parser.add_argument("--snrs", type=float, nargs="+", default=list(bench.SNRS))
    parser.add_argument("--max-epochs", type=int, default=bench.MAX_EPOCHS)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=bench.DATA)
    args = parser.parse_args(argv)
    from sermodels.data.sessions import default_cache

    sessions = bench.load_all_sessions(list(SOURCES), args.data, args.cache or default_cache())
    frontend = BLSTMEnhancer().eval()
    clean = [bench.mfcc_frames(frontend, s.audio) for s in sessions]
    pools = bench.babble_pools(sessions)
    grid = [(k, s) for k, s in conditions(bench.KINDS, args.snrs) if s is None or k not in ("phone", "reverb")]
    noisy_all = {}
    for kind, snr in grid:
        noisy_all[Degradation(kind, snr).name] = bench.degraded_mfccs(frontend, sessions, kind, snr, pools)
        bench.log(f"degraded: {Degradation(kind, snr).name}")
    model, record = bench.fit_mixed(noisy_all, clean, sessions, args.max_epochs)
    test_clean = bench.select(clean, sessions, "test")
    metrics = {}
    for name, versions in {**noisy_all, "clean": clean}.items():
        test = bench.select(versions, sessions, "test")
        metrics[f"sessions_{name}/test"] = {
            "mse_unenhanced": feature_mse(model, test, test_clean, enhance=False),
            "mse_enhanced": feature_mse(model, test, test_clean, enhance=True),
        }
    training = {
        "recipe": "recipes/blstm_enhancer/release.py",
        "regime": "feature enhancement (MSE to clean MFCCs), mixed conditions",
        "corpora": [{"name": f"{c}_sessions", **_licence(c)} for c in SOURCES],
        "conditions": [name for name in noisy_all],
        "session_config": SessionConfig().to_json(),
        "enhancer": record,
        "split": {f"{c}_sessions": "fixed" for c in SOURCES},
    }
    save_pretrained(model, args.out, extra={"id": args.out.name, "description": DESCRIPTION, "training": training,
                                            "limitations": LIMITATIONS})  # fmt: skip
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    write_model_card(args.out)
    bench.log(f"wrote {args.out}: {record}")
    return 0


def _licence(corpus: str) -> dict[str, str]:
    from sermodels.data.base import corpus_meta

    meta = corpus_meta(corpus)
    return {"title": f"pseudo-sessions of {meta.title}", "licence": meta.licence, "language": meta.language,
            "citation": meta.citation, "url": meta.url}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
