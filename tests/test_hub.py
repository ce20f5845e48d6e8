"""sermodels.hub against a loopback Hugging Face Hub (tests/hub_server.py) with the real huggingface_hub client:
push, load by id at a pinned revision, sha256 verification, offline cache reuse, and the offline error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from torch import nn

from sermodels import _registry, hub
from sermodels._registry import register_model, unregister_model
from sermodels.card import write_model_card
from sermodels.checkpoint import save_pretrained
from sermodels.models.base import SERModel

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

# huggingface_hub's LFS upload passes a file object as `data=`, which its HTTP library deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

ARCH = "test_hub_tiny"
REPO = "sermodels-test/tiny-ser"
TOKEN = "hf_loopback_test_token"


class HubTiny(SERModel):
    """Waveform ``(B, T)`` -> mean of 100-sample frames through a linear layer -> logits ``(B, C)``."""

    def __init__(self, labels=("anger", "neutral"), width: int = 100):
        super().__init__()
        self.sample_rate, self.heads, self.default_head = 16000, {"emo": list(labels)}, "emo"
        self.width = width
        self.proj = nn.Linear(width, len(labels))

    def config(self):
        return {"labels": self.heads["emo"], "width": self.width}

    def embed(self, waveforms, lengths=None):
        n = waveforms.shape[-1] // self.width
        return waveforms[:, : n * self.width].reshape(waveforms.shape[0], n, self.width).mean(1)

    def forward(self, waveforms, lengths=None, head=None):
        return self.proj(self.embed(waveforms))


WAVES = torch.randn(2, 1600, generator=torch.Generator().manual_seed(3))


@pytest.fixture(autouse=True)
def tiny_arch(monkeypatch):
    monkeypatch.setattr(_registry, "_MODEL_PACKAGES", [])
    monkeypatch.setattr(_registry, "_modules_imported", False)
    register_model(ARCH)(HubTiny)
    yield ARCH
    unregister_model(ARCH)


@pytest.fixture
def server(tmp_path):
    with HubServer(tmp_path / "hub", lifetime_s=60) as srv:
        yield srv


@pytest.fixture
def hf_env(server, tmp_path, monkeypatch):
    """Point huggingface_hub at the loopback server with an isolated HF_HOME, no telemetry, no Xet, no token; no
    local checkpoints; an index file of our own. Constants are read at import, so they are patched too."""
    home = tmp_path / "hf_home"
    env = {
        "HF_ENDPOINT": server.url,
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "SERMODELS_CHECKPOINTS": str(tmp_path / "checkpoints"),
        "SERMODELS_PRETRAINED_INDEX": str(tmp_path / "index.json"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(key, raising=False)
    patched = {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
    }
    for key, value in patched.items():
        monkeypatch.setattr(constants, key, value)
    (tmp_path / "index.json").write_text("{}")
    return env


def _release(folder: Path, seed: int, labels=("anger", "neutral")) -> HubTiny:
    torch.manual_seed(seed)
    model = HubTiny(labels=labels).eval()
    training = {"corpora": [{"name": "EMODB", "licence": "CC0-1.0"}], "split": "fixed"}
    save_pretrained(model, folder, extra={"id": f"{ARCH}.demo", "training": training})
    write_model_card(folder)
    return model


def _write_index(path: Path, entries: dict) -> None:
    path.write_text(json.dumps(entries, indent=2))


def _outputs(model: SERModel) -> torch.Tensor:
    with torch.no_grad():
        return model(WAVES)


def test_push_then_load_by_id(hf_env, server, tmp_path):
    folder = tmp_path / "release"
    model = _release(folder, seed=0)
    sha = hub.push(folder, REPO, token=TOKEN)
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    assert server.repos[REPO].branches["main"] == sha
    entry = hub.index_entry(folder, REPO, sha)
    assert set(entry["sha256"]) == {"config.json", "model.safetensors", "README.md"}
    _write_index(Path(hf_env["SERMODELS_PRETRAINED_INDEX"]), {"_default": f"{ARCH}.demo", f"{ARCH}.demo": entry})

    loaded = hub.load(f"{ARCH}.demo")
    assert isinstance(loaded, HubTiny) and not loaded.training
    assert torch.equal(_outputs(loaded), _outputs(model))

    snapshot = hub.resolve("default")
    assert snapshot.parent.name == "snapshots" and snapshot.name == sha
    assert Path(hf_env["HF_HOME"]) in snapshot.parents
    assert (snapshot / "README.md").read_text() == (folder / "README.md").read_text()
    assert not (snapshot / "metrics.json").exists()
    assert hub.read_config(f"{ARCH}.demo")["architecture"] == ARCH
    elsewhere = hub.resolve(f"{ARCH}.demo", cache_dir=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere") in elsewhere.parents and elsewhere.name == sha
    # The missing optional metrics.json was recorded by the client, so a second resolve asks nothing for it.
    asked = len(server.requests)
    hub.resolve(f"{ARCH}.demo")
    assert server.requests[asked:] == []


def test_write_needs_a_token(hf_env, tmp_path):
    folder = tmp_path / "release"
    _release(folder, seed=0)
    with pytest.raises(Exception, match="401"):
        hub.push(folder, REPO)


def test_tampered_file_on_the_hub_is_detected(hf_env, server, tmp_path):
    folder = tmp_path / "release"
    _release(folder, seed=0)
    sha = hub.push(folder, REPO, token=TOKEN)
    entry = hub.index_entry(folder, REPO, sha)
    _write_index(Path(hf_env["SERMODELS_PRETRAINED_INDEX"]), {f"{ARCH}.demo": entry})
    evil = tmp_path / "evil"
    _release(evil, seed=1)
    server.tamper(REPO, "model.safetensors", (evil / "model.safetensors").read_bytes(), revision=sha)

    with pytest.raises(hub.ChecksumError) as err:
        hub.load(f"{ARCH}.demo")
    message = str(err.value)
    assert "model.safetensors" in message and entry["sha256"]["model.safetensors"] in message
    assert hub.sha256_of(evil / "model.safetensors") in message


def test_revision_pinning_and_branches(hf_env, server, tmp_path):
    first, second = tmp_path / "v1", tmp_path / "v2"
    model_1, model_2 = _release(first, seed=1), _release(second, seed=2)
    sha_1 = hub.push(first, REPO, token=TOKEN)
    sha_2 = hub.push(second, REPO, token=TOKEN, commit_message="retrain")
    assert sha_1 != sha_2 and server.repos[REPO].branches["main"] == sha_2
    index = Path(hf_env["SERMODELS_PRETRAINED_INDEX"])
    _write_index(index, {f"{ARCH}.demo": hub.index_entry(first, REPO, sha_1)})

    assert torch.equal(_outputs(hub.load(f"{ARCH}.demo")), _outputs(model_1))
    # An explicit revision overrides the pinned one (its files are then not the index's, so not checked).
    assert torch.equal(_outputs(hub.load(f"{ARCH}.demo", revision=sha_2)), _outputs(model_2))
    # An index entry may also follow a branch; the files must still match its hashes.
    _write_index(index, {f"{ARCH}.demo": hub.index_entry(second, REPO, "main")})
    assert torch.equal(_outputs(hub.load(f"{ARCH}.demo")), _outputs(model_2))
    # Pushing to a branch creates it; main is untouched.
    sha_dev = hub.push(first, REPO, revision="dev", token=TOKEN)
    assert server.repos[REPO].branches["dev"] == sha_dev and server.repos[REPO].branches["main"] == sha_2
    assert torch.equal(_outputs(hub.load(f"{ARCH}.demo", revision="dev")), _outputs(model_1))
    with pytest.raises(FileNotFoundError, match="revision 'nope' does not exist"):
        hub.resolve(f"{ARCH}.demo", revision="nope")


def test_offline_uses_the_cache(hf_env, server, tmp_path, monkeypatch):
    folder = tmp_path / "release"
    model = _release(folder, seed=4)
    sha = hub.push(folder, REPO, token=TOKEN)
    index = Path(hf_env["SERMODELS_PRETRAINED_INDEX"])
    _write_index(
        index,
        {f"{ARCH}.demo": hub.index_entry(folder, REPO, sha), f"{ARCH}.branch": hub.index_entry(folder, REPO, "main")},
    )
    hub.resolve(f"{ARCH}.demo")
    hub.resolve(f"{ARCH}.branch")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    asked = len(server.requests)
    assert torch.equal(_outputs(hub.load(f"{ARCH}.demo")), _outputs(model))
    assert torch.equal(_outputs(hub.load(f"{ARCH}.branch")), _outputs(model))
    assert server.requests[asked:] == []


def test_offline_with_empty_cache_is_a_clear_error(hf_env, server, tmp_path, monkeypatch):
    folder = tmp_path / "release"
    _release(folder, seed=0)
    sha = hub.push(folder, REPO, token=TOKEN)
    _write_index(Path(hf_env["SERMODELS_PRETRAINED_INDEX"]), {f"{ARCH}.demo": hub.index_entry(folder, REPO, sha)})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    asked = len(server.requests)
    with pytest.raises(hub.HubUnavailableError) as err:
        hub.load(f"{ARCH}.demo")
    message = str(err.value)
    assert f"{ARCH}.demo" in message and REPO in message and "HF_HUB_OFFLINE" in message
    assert "download" in message and "checkpoints" in message
    assert server.requests[asked:] == []
    with pytest.raises(hub.HubUnavailableError):
        hub.resolve(f"{ARCH}.demo", local_only=True)


def test_local_checkpoint_folder_wins_and_is_verified(hf_env, server, tmp_path):
    local = Path(hf_env["SERMODELS_CHECKPOINTS"]) / f"{ARCH}.demo"
    model = _release(local, seed=5)
    _write_index(
        Path(hf_env["SERMODELS_PRETRAINED_INDEX"]),
        {f"{ARCH}.demo": hub.index_entry(local, "nobody/never-pushed", "b" * 40)},
    )
    assert hub.resolve(f"{ARCH}.demo") == local
    assert torch.equal(_outputs(hub.load(f"{ARCH}.demo")), _outputs(model))
    assert torch.equal(_outputs(hub.load(local)), _outputs(model))
    assert server.requests == []

    config = json.loads((local / "config.json").read_text())
    (local / "config.json").write_text(json.dumps({**config, "training": {"split": "edited"}}, indent=2))
    with pytest.raises(hub.ChecksumError, match=r"sha256 mismatch for config\.json .* expected [0-9a-f]{64}, got"):
        hub.load(f"{ARCH}.demo")


def test_unknown_ids_and_paths(hf_env, tmp_path):
    with pytest.raises(FileNotFoundError, match="unknown pretrained model 'nothing.here'"):
        hub.resolve("nothing.here")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hub.resolve(str(tmp_path / "no" / "folder"))
    with pytest.raises(FileNotFoundError, match="lacks"):
        hub.push(tmp_path, REPO, token=TOKEN)


def test_environment_variables_in_a_fresh_process(hf_env, server, tmp_path):
    """The documented user path: HF_ENDPOINT / HF_HUB_OFFLINE set before huggingface_hub is imported."""
    folder = tmp_path / "release"
    model = _release(folder, seed=6)
    sha = hub.push(folder, REPO, token=TOKEN)
    _write_index(Path(hf_env["SERMODELS_PRETRAINED_INDEX"]), {f"{ARCH}.demo": hub.index_entry(folder, REPO, sha)})
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[1])\n"
        "import test_hub\n"
        "from sermodels import _registry, hub\n"
        "_registry._MODEL_PACKAGES = []  # as the autouse fixture: only the test architecture\n"
        f"test_hub.register_model({ARCH!r})(test_hub.HubTiny)\n"
        f"print(hub.load({ARCH + '.demo'!r})(test_hub.WAVES).detach().numpy().tobytes().hex())\n"
    )
    env = {**os.environ, **hf_env, "PYTHONPATH": str(Path(__file__).parents[1])}
    run = [sys.executable, "-c", script, str(Path(__file__).parent)]
    online = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert online.returncode == 0, online.stderr
    expected = _outputs(model).numpy().tobytes().hex()
    assert online.stdout.strip() == expected
    asked = len(server.requests)
    offline = subprocess.run(run, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == expected and server.requests[asked:] == []


def test_loopback_server_refuses_object_ids_that_are_not_hashes(tmp_path):
    from hub_server import HubError

    with HubServer(tmp_path / "hub", lifetime_s=5) as srv, pytest.raises(HubError, match="invalid LFS object id"):
        srv.blob_path("../../../../etc/hostname")


def test_unpublished_entry_without_local_folder_is_a_clear_error(hf_env, tmp_path):
    folder = tmp_path / "release"
    _release(folder, seed=0)
    _write_index(Path(hf_env["SERMODELS_PRETRAINED_INDEX"]), {f"{ARCH}.demo": hub.index_entry(folder, REPO, None)})
    with pytest.raises(hub.HubUnavailableError, match="not published on the Hub yet"):
        hub.load(f"{ARCH}.demo")


def test_config_that_does_not_build_names_the_file(tmp_path):
    folder = tmp_path / "release"
    _release(folder, seed=0)
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["bogus"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: model_args do not build"):
        hub.load(str(folder))
    (folder / "config.json").write_text("7")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        hub.load(str(folder))
