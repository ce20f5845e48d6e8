"""Domain names against module attributes and folder names, and `sermodels finetune` for any multi-domain family.

``nn.ModuleDict`` / ``nn.ParameterDict`` refuse keys that are module attributes (``train``, ``eval``, ``to``);
EmoNet and its adapter layers store such domains under ``<name>__domain`` (:mod:`sermodels.layers.domains`), so the
data folder ``my_corpus/train`` can name the new head. Real EMO-DB clips, the released ``emonet_wrn.multi4``, and a
toy multi-domain family registered here that is not EmoNet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import corpus_root
from torch import nn

import sermodels
from sermodels._registry import register_model, unregister_model
from sermodels.audio import load_audio
from sermodels.checkpoint import save_pretrained
from sermodels.cli import main
from sermodels.layers.domains import check_domain_name, domain_key
from sermodels.models.base import SERModel, valid_lengths
from sermodels.models.emonet import EmoNet
from sermodels.outputs import OutputSpec
from sermodels.pipelines.predict import predict_files
from sermodels.training.finetune import corpus_name_for

CLASSES = {"anger": "W", "sadness": "T"}  # EMO-DB emotion letters
FILES_PER_CLASS = 5
FAST = ["--epochs", "1", "--batch-size", "4", "--max-duration", "1", "--no-progress", "--accelerator", "cpu"]
SMALL = {"stem": 4, "widths": (8, 8, 8), "attention_units": 8, "hidden": 8}


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory) -> Path:
    """``<tmp>/my_corpus/train/<class>/<file>.flac``: symlinks to five real EMO-DB clips of each class."""
    wav = corpus_root("emodb") / "wav"
    root = tmp_path_factory.mktemp("user") / "my_corpus" / "train"
    for label, letter in CLASSES.items():
        (root / label).mkdir(parents=True)
        for clip in sorted(wav.glob(f"??a0?{letter}?.flac"))[:FILES_PER_CLASS]:
            (root / label / clip.name).symlink_to(clip)
    return root


def _finetune(base: str | Path, data: Path, out: Path, *extra: str) -> int:
    return main(["finetune", "--from", str(base), "--data", str(data), "--out", str(out), *FAST, *extra])


# ---------------------------------------------------------------------------------------------------- EmoNet


def test_released_emonet_finetunes_on_a_folder_named_train(train_folder, tmp_path, capsys):
    out = tmp_path / "model"
    assert _finetune("emonet_wrn.multi4", train_folder, out) == 0
    assert "on train (2 classes)" in capsys.readouterr().out
    model = sermodels.load(out)
    assert model.heads == {"train": list(CLASSES)} and model.default_head == "train"
    state = model.state_dict()
    assert "classifiers.train__domain.0.weight" in state and "stem.bns.train__domain.weight" in state
    assert json.loads((out / "metrics.json").read_text())["train/test"]["head"] == "train"
    clips = sorted(train_folder.rglob("*.flac"))
    result = predict_files(model, clips, head="train", progress=False)
    assert not result.failures and {row["label"] for row in result.rows} <= set(CLASSES)
    assert main(["predict", "--model", str(out), "--no-progress", str(clips[0])]) == 0
    assert result.rows[0]["label"] in capsys.readouterr().out.splitlines()[2]


def test_domains_named_like_module_attributes_round_trip(tmp_path, emodb_root):
    torch.manual_seed(0)
    model = EmoNet({"emodb": ["anger", "sadness"], "urdu": ["angry", "happy", "sad"]}, **SMALL).eval()
    model.add_domain("eval", ["low", "high"], like="emodb", copy_adapters=True)
    model.add_domain("to", ["negative", "neutral", "positive"], like="urdu")
    with torch.no_grad():  # non-zero adapters, so that a mix-up of domains would show in the outputs
        for name in ("eval", "to"):
            for param in model.domain_parameters(name)[:3]:
                param.normal_(0, 0.1)
    wave = load_audio(emodb_root / "wav" / "03a01Fa.flac")[None]
    with torch.no_grad():
        expected = {head: model(wave, head=head) for head in model.heads}
    assert not torch.equal(expected["eval"], expected["emodb"])
    folder = save_pretrained(model, tmp_path / "four_domains")
    loaded = sermodels.load(folder)
    assert loaded.heads == model.heads
    with torch.no_grad():
        for head, output in expected.items():
            torch.testing.assert_close(loaded(wave, head=head), output)
    keys = set(loaded.state_dict())
    assert {"stem.adapters.eval__domain", "final_bns.to__domain.weight", "classifiers.emodb.0.weight"} <= keys
    assert len(loaded.head_parameters("to")) == len(loaded.head_parameters("emodb"))
    loaded.remove_domain("eval")
    assert "eval" not in loaded.heads and not any("eval__domain" in key for key in loaded.state_dict())


def test_domain_names_and_folder_names():
    assert domain_key("train") == "train__domain" and domain_key("emodb") == "emodb"
    for bad in ("x__domain", "train__domain", "my corpus", "émotion", ""):
        with pytest.raises(ValueError):
            check_domain_name(bad)
    with pytest.raises(ValueError, match="__domain"):
        EmoNet({"train__domain": ["a", "b"]}, **SMALL)
    assert corpus_name_for("/data/my_corpus/train") == "train"
    assert corpus_name_for("/data/Émotions du film") == "Emotions_du_film"
    assert corpus_name_for("/data/2024 corpus.v2") == "2024_corpus_v2"
    assert corpus_name_for("/data/情感") == "custom"
    assert corpus_name_for("/data/old__domain") == "old_domain"
    assert corpus_name_for("/data/labels.v2.csv") == "labels_v2"
    for name in ("train", "Emotions_du_film", "2024_corpus_v2", "old_domain"):
        assert check_domain_name(name) == name


def test_name_overrides_and_is_checked(train_folder, tmp_path, capsys):
    assert _finetune("emonet_wrn.multi4", train_folder, tmp_path / "o", "--name", "x__domain") == 2
    assert "may not end in '__domain'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------- other families


class MultiDomainEnergy(SERModel):
    """A multi-domain family that is not EmoNet: log power and log peak of the clip, a shared linear layer, then per
    domain a scale vector (its "adapter") and a linear head."""

    WIDTH = 4

    def __init__(self, domains: dict[str, list[str]], default_head: str | None = None, sample_rate: int = 16000):
        super().__init__()
        self.sample_rate = sample_rate
        self.heads: dict[str, list[str]] = {}
        self.shared = nn.Linear(2, self.WIDTH)
        self.scales = nn.ParameterDict()
        self.classifiers = nn.ModuleDict()
        for name, labels in domains.items():
            self.add_domain(name, labels)
        self.default_head = default_head or next(iter(domains))

    def config(self) -> dict[str, Any]:
        return {"domains": dict(self.heads), "default_head": self.default_head, "sample_rate": self.sample_rate}

    def add_domain(
        self,
        name: str,
        labels: list[str] | OutputSpec,
        like: str | None = None,
        copy_adapters: bool = False,
        replace: bool = False,
    ) -> None:
        if name in self.heads and not replace:
            raise ValueError(f"domain {name!r} exists already")
        labels = list(labels.names) if isinstance(labels, OutputSpec) else list(labels)
        source = self.scales[domain_key(like)].detach().clone() if copy_adapters and like else torch.ones(self.WIDTH)
        self.scales[domain_key(check_domain_name(name))] = nn.Parameter(source)
        self.classifiers[domain_key(name)] = nn.Linear(self.WIDTH, len(labels))
        self.heads[name] = labels

    def remove_domain(self, name: str) -> None:
        del self.scales[domain_key(name)], self.classifiers[domain_key(name)], self.heads[name]
        if self.default_head == name:
            self.default_head = next(iter(self.heads))

    def domain_parameters(self, name: str) -> list[nn.Parameter]:
        return [self.scales[domain_key(name)], *self.head_parameters(name)]

    def head_parameters(self, name: str) -> list[nn.Parameter]:
        return list(self.classifiers[domain_key(self.resolve_head(name))].parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.shared.parameters())

    def embed(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = valid_lengths(waveforms, lengths)
        valid = torch.arange(waveforms.shape[-1], device=waveforms.device) < lengths[:, None]
        power = (waveforms.square() * valid).sum(-1) / lengths
        peak = (waveforms.abs() * valid).amax(-1)
        return torch.tanh(self.shared(torch.log(torch.stack([power, peak], -1) + 1e-8)))

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, head: str | None = None):
        key = domain_key(self.resolve_head(head))
        return self.classifiers[key](self.embed(waveforms, lengths) * self.scales[key])


class NoSharedParameters(MultiDomainEnergy):
    """Per-domain heads but no notion of a shared network: not a base for fine-tuning."""

    shared_parameters = None


@pytest.fixture(scope="module", autouse=True)
def toy_families():
    """Registered only while this module's tests run (the model contract iterates over the registry)."""
    families = {"test_multi_domain_energy": MultiDomainEnergy, "test_no_shared_energy": NoSharedParameters}
    for name, cls in families.items():
        register_model(name)(cls)
    yield
    for name in families:
        unregister_model(name)


def test_another_multi_domain_family_finetunes_through_the_same_command(train_folder, tmp_path, capsys):
    torch.manual_seed(0)
    base = save_pretrained(MultiDomainEnergy({"emodb": ["anger", "happiness", "sadness"]}), tmp_path / "energy")
    out = tmp_path / "tuned"
    assert _finetune(base, train_folder, out) == 0
    assert "on train (2 classes)" in capsys.readouterr().out
    before, after = sermodels.load(base), sermodels.load(out)
    assert isinstance(after, MultiDomainEnergy) and after.heads == {"train": list(CLASSES)}
    assert all(torch.equal(a, b) for a, b in zip(before.shared_parameters(), after.shared_parameters(), strict=True))
    assert not torch.equal(after.scales["train__domain"], torch.ones(MultiDomainEnergy.WIDTH))  # trained
    result = predict_files(after, sorted(train_folder.rglob("*.flac"))[:2], progress=False)
    assert not result.failures and result.rows[0]["label"] in CLASSES


def test_a_base_without_the_multi_domain_methods_is_a_clear_error(train_folder, tmp_path, capsys):
    base = save_pretrained(NoSharedParameters({"emodb": ["anger", "sadness"]}), tmp_path / "no_shared")
    assert _finetune(base, train_folder, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "not a multi-domain model (it lacks shared_parameters)" in err and str(base) in err
    assert not (tmp_path / "o").exists()
