"""The architecture registry, the pretrained index and the checkpoint folder format (save -> load round trip)."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from sermodels import _registry, pretrained
from sermodels._registry import (
    UnknownModelError,
    create_model,
    get_model_class,
    list_models,
    model_modules,
    register_model,
    unregister_model,
)
from sermodels.checkpoint import load_folder, safetensors_bytes, save_pretrained
from sermodels.models.base import SERModel, valid_lengths
from sermodels.pretrained import list_pretrained, load_index, resolve_alias, set_index_path

TEST_ARCH = "test_tiny_ser"
ZOO_MODULES = model_modules()
FRAME = 160


class TinySER(SERModel):
    """A real (tiny) SERModel for mechanism tests: frames of 160 samples -> linear -> masked mean -> linear."""

    def __init__(self, labels=("angry", "happy", "neutral"), hidden: int = 8, head: str = "emo", sample_rate=16000):
        super().__init__()
        self.sample_rate = sample_rate
        self.heads = {head: list(labels)}
        self.default_head = head
        self.hidden = hidden
        self.proj = nn.Linear(FRAME, hidden)
        self.register_buffer("gain", torch.linspace(0.5, 1.5, hidden))
        self.out = nn.Linear(hidden, len(labels))

    def config(self):
        return {"labels": self.heads[self.default_head], "hidden": self.hidden, "head": self.default_head}

    def embed(self, waveforms, lengths=None):
        lengths = valid_lengths(waveforms, lengths)
        n = waveforms.shape[-1] // FRAME
        frames = waveforms[:, : n * FRAME].reshape(waveforms.shape[0], n, FRAME)
        mask = (torch.arange(n, device=waveforms.device)[None] < (lengths // FRAME)[:, None]).float()
        hidden = torch.tanh(self.proj(frames)) * self.gain
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)

    def forward(self, waveforms, lengths=None, head=None):
        self.resolve_head(head)
        return self.out(self.embed(waveforms, lengths))


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Only the classes a test registers: no model packages (the files of the zoo are tested elsewhere)."""
    monkeypatch.setattr(_registry, "_MODEL_PACKAGES", [])
    monkeypatch.setattr(_registry, "_modules_imported", False)
    before = dict(_registry._MODELS)
    yield
    # Drop what the test registered, but keep registrations by zoo modules it imported: a module registers only
    # once (at import), so dropping those would hide real architectures from later tests.
    for name, cls in list(_registry._MODELS.items()):
        if name not in before and not cls.__module__.startswith("sermodels."):
            del _registry._MODELS[name]
    _registry._MODELS.update(before)


@pytest.fixture
def tiny_arch():
    register_model(TEST_ARCH)(TinySER)
    yield TEST_ARCH
    unregister_model(TEST_ARCH)


def test_register_sets_arch_and_lookup_works(tiny_arch):
    assert TinySER.arch == TEST_ARCH
    assert get_model_class(TEST_ARCH) is TinySER
    model = create_model(TEST_ARCH, labels=["a", "b"], hidden=4)
    assert isinstance(model, TinySER) and model.label_names() == ["a", "b"] and model.proj.out_features == 4
    assert TEST_ARCH in list_models()
    assert list_models("test_tiny_*") == [TEST_ARCH]
    assert list_models("nothing_*") == []


def test_bare_decorator_uses_snake_case_class_name():
    @register_model
    class DeepSpectrumSVM(TinySER):
        pass

    assert DeepSpectrumSVM.arch == "deep_spectrum_svm"
    assert get_model_class("deep_spectrum_svm") is DeepSpectrumSVM


def test_duplicate_name_is_an_error_naming_both(tiny_arch):
    class Other(TinySER):
        pass

    with pytest.raises(ValueError, match="registered twice") as err:
        register_model(TEST_ARCH)(Other)
    assert "TinySER" in str(err.value) and "Other" in str(err.value)
    assert get_model_class(TEST_ARCH) is TinySER


def test_bad_registrations():
    with pytest.raises(TypeError, match="SERModel"):
        register_model("plain_module")(nn.Linear)
    with pytest.raises(ValueError, match="must match"):
        register_model("Bad.Name")(TinySER)


def test_unknown_name_lists_close_matches(tiny_arch):
    with pytest.raises(KeyError, match="did you mean test_tiny_ser"):
        create_model("test_tiny_sr")
    with pytest.raises(UnknownModelError, match="looks like a pretrained id"):
        get_model_class(f"{TEST_ARCH}.emodb")
    with pytest.raises(KeyError, match="unknown architecture 'zzz'"):
        unregister_model("zzz")


def _zoo_package(root, name: str, modules: dict[str, str]) -> str:
    """A package ``name`` under ``root`` holding ``modules`` (file name -> source), as ``sermodels.models`` holds
    the model files."""
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for filename, source in modules.items():
        (package / filename).write_text(source)
    return name


LAZY_MODULE = (
    "from sermodels._registry import register_model\n"
    f"from {__name__} import TinySER\n"
    "@register_model('lazy_tiny')\n"
    "class LazyTiny(TinySER):\n    pass\n"
)


def test_model_package_import_errors_surface(monkeypatch, tmp_path):
    broken = "import sermodels.no_such_dependency\n"
    name = _zoo_package(tmp_path, "broken_zoo", {"good.py": LAZY_MODULE, "broken.py": broken})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_registry, "_MODEL_PACKAGES", [name])
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency"):
        list_models()
    with pytest.raises(ModuleNotFoundError):
        create_model("anything")


def test_every_module_of_a_model_package_is_found_and_imported_lazily_once(monkeypatch, tmp_path):
    name = _zoo_package(tmp_path, "lazy_zoo", {"lazy_tiny.py": LAZY_MODULE, "notes.txt": "not a module"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_registry, "_MODEL_PACKAGES", [name])
    assert model_modules() == ["lazy_zoo.lazy_tiny"]  # found without being listed anywhere
    assert "lazy_tiny" not in _registry._MODELS
    assert "lazy_tiny" in list_models()
    assert get_model_class("lazy_tiny").__module__ == "lazy_zoo.lazy_tiny"


def test_the_zoo_package_is_discovered():
    assert {"sermodels.models.emonet", "sermodels.models.svm", "sermodels.models.deep_spectrum"} <= set(ZOO_MODULES)


@pytest.mark.parametrize("module", [m for m in ZOO_MODULES if m != "sermodels.models.base"])
def test_model_files_register_architectures(module):
    importlib.import_module(module)
    registered = [name for name, cls in _registry._MODELS.items() if cls.__module__ == module]
    assert registered, f"{module} is a file of sermodels/models/ but registers no architecture"
    for name in registered:
        assert get_model_class(name).arch == name


def _waves(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 16000, generator=g), torch.tensor([16000, 9000, 4000])


def test_save_load_round_trip_identical_outputs(tiny_arch, tmp_path):
    torch.manual_seed(0)
    model = create_model(TEST_ARCH, labels=["anger", "joy", "sadness", "neutral"], hidden=6).eval()
    extra = {"id": f"{TEST_ARCH}.unit", "training": {"corpora": [{"name": "EMODB", "licence": "CC0-1.0"}]}}
    folder = save_pretrained(model, tmp_path / "ckpt", extra=extra)

    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == TEST_ARCH and config["format_version"] == 1
    assert config["model_args"] == {"labels": ["anger", "joy", "sadness", "neutral"], "hidden": 6, "head": "emo"}
    assert config["heads"] == {"emo": ["anger", "joy", "sadness", "neutral"]} and config["default_head"] == "emo"
    assert config["sample_rate"] == 16000 and config["training"] == extra["training"] and config["id"] == extra["id"]
    assert set(config["software"]) == {"sermodels", "torch", "python"}
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "architecture": TEST_ARCH}
        assert set(f.keys()) == set(model.state_dict())

    loaded = load_folder(folder)
    assert type(loaded) is TinySER and not loaded.training
    waves, lengths = _waves()
    with torch.no_grad():
        assert torch.equal(model(waves, lengths), loaded(waves, lengths))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_tied_weights_are_saved(tmp_path):
    @register_model("tied_tiny")
    class TiedTiny(TinySER):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.out2 = nn.Linear(self.hidden, len(self.label_names()))
            self.out2.weight = self.out.weight

    model = TiedTiny()
    loaded = load_folder(save_pretrained(model, tmp_path / "tied"))
    assert torch.equal(loaded.out2.weight, model.out.weight)


def test_save_rejects_unregistered_and_reserved_keys(tiny_arch, tmp_path):
    class Unregistered(TinySER):
        pass

    with pytest.raises(ValueError, match="not registered"):
        save_pretrained(Unregistered(), tmp_path / "a")
    with pytest.raises(ValueError, match="overwrite"):
        save_pretrained(TinySER(), tmp_path / "b", extra={"heads": {}})
    with pytest.raises(ValueError, match="not plain JSON"):
        save_pretrained(TinySER(), tmp_path / "c", extra={"training": {"when": object()}})


def test_load_errors_are_clear(tiny_arch, tmp_path):
    folder = save_pretrained(TinySER(hidden=8), tmp_path / "ckpt")

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(tmp_path / "nowhere")

    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_args": {**config["model_args"], "hidden": 4}}))
    with pytest.raises(ValueError, match=r"tensor '[\w.]+' has shape \(8.*expects \(4"):
        load_folder(folder)

    (folder / "config.json").write_text(json.dumps({**config, "architecture": "test_tiny_sre"}))
    with pytest.raises(KeyError, match=r"config\.json.*unknown architecture 'test_tiny_sre'.*test_tiny_ser"):
        load_folder(folder)

    (folder / "config.json").write_text(json.dumps({**config, "format_version": 2}))
    with pytest.raises(ValueError, match="format_version 2"):
        load_folder(folder)

    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_folder(folder)

    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_folder(folder)

    save_file({"proj.weight": torch.zeros(8, FRAME)}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="tensors missing from the file"):
        load_folder(folder)


def _entry(repo: str) -> dict:
    return {"repo_id": repo, "revision": "a" * 40, "sha256": {"config.json": "0" * 64, "model.safetensors": "1" * 64}}


def test_list_pretrained_index_and_local_folders(tmp_path, monkeypatch):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"_default": "logmel_svm.emodb", "logmel_svm.emodb": _entry("org/a")}))
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "emonet_wrn.multi4").mkdir(parents=True)
    (checkpoints / "emonet_wrn.multi4" / "config.json").write_text("{}")
    (checkpoints / "not_a_checkpoint").mkdir()
    monkeypatch.setenv("SERMODELS_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("SERMODELS_PRETRAINED_INDEX", str(index))

    assert list_pretrained() == ["emonet_wrn.multi4", "logmel_svm.emodb"]
    assert list_pretrained("logmel_*") == ["logmel_svm.emodb"]
    assert resolve_alias("default") == "logmel_svm.emodb"
    assert resolve_alias("emonet_wrn.multi4") == "emonet_wrn.multi4"

    other = tmp_path / "other.json"
    other.write_text("{}")
    set_index_path(other)
    try:
        assert list_pretrained() == ["emonet_wrn.multi4"]
        with pytest.raises(KeyError, match="no '_default'"):
            resolve_alias("default")
    finally:
        set_index_path(None)
    assert pretrained.index_path() == index


def test_shipped_index_is_valid(monkeypatch):
    monkeypatch.delenv("SERMODELS_PRETRAINED_INDEX", raising=False)
    index = load_index()
    assert isinstance(index, dict)
    if "_default" in index:
        assert index["_default"] in index


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1]", "must be a JSON object"),
        ('{"nodot": {}}', "arch.tag"),
        ('{"a.b": {"repo_id": "noslash", "revision": "main", "sha256": {}}}', "ORG/NAME"),
        ('{"a.b": {"repo_id": "o/n", "revision": "main", "sha256": {"config.json": "xyz"}}}', "64 lower-case hex"),
        ('{"a.b": {"repo_id": "o/n", "revision": "main", "sha256": {"config.json": "' + "0" * 64 + '"}}}', "lacks"),
        ('{"_default": 3}', "_default"),
    ],
)
def test_invalid_index_is_reported(tmp_path, monkeypatch, content, message):
    index = tmp_path / "bad.json"
    index.write_text(content)
    monkeypatch.setenv("SERMODELS_PRETRAINED_INDEX", str(index))
    with pytest.raises(ValueError, match=message) as err:
        load_index()
    assert str(index) in str(err.value)


def test_safetensors_bytes_are_reproducible():
    """safetensors writes its metadata in hash-map order; ours are sorted, so equal weights give equal files."""
    from safetensors.torch import load

    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}
    metadata = {f"key{i}": str(i) for i in range(12)} | {"format": "pt"}
    blobs = {safetensors_bytes(state, dict(reversed(list(metadata.items())))) for _ in range(5)}
    blobs.add(safetensors_bytes(state, metadata))
    assert len(blobs) == 1
    loaded = load(blobs.pop())
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["b"], state["b"])


def test_a_model_module_rerun_after_a_failed_import_shows_the_real_error_again(monkeypatch, tmp_path):
    """The module registers a class, then fails; the next lookup re-runs it and must not report the class as a
    duplicate of itself."""
    half_broken = (
        "from sermodels._registry import register_model\n"
        f"from {__name__} import TinySER\n"
        "@register_model('half_broken')\n"
        "class HalfBroken(TinySER):\n    pass\n"
        "import sermodels.no_such_dependency\n"
    )
    name = _zoo_package(tmp_path, "half_zoo", {"half.py": half_broken})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_registry, "_MODEL_PACKAGES", [name])
    try:
        for _ in range(2):
            with pytest.raises(ModuleNotFoundError, match="no_such_dependency"):
                list_models()
    finally:
        _registry._MODELS.pop("half_broken", None)


def test_a_model_module_may_look_up_another_while_the_zoo_is_discovered(monkeypatch, tmp_path):
    """A family building on another registered one looks it up at import time: no deadlock on the import lock."""
    import threading

    child = (
        "from sermodels._registry import get_model_class, register_model\n"
        "@register_model('child_family')\n"
        "class ChildFamily(get_model_class('lazy_tiny')):\n    pass\n"
    )
    name = _zoo_package(tmp_path, "family_zoo", {"a_base.py": LAZY_MODULE, "b_child.py": child})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_registry, "_MODEL_PACKAGES", [name])
    found: list[list[str]] = []
    worker = threading.Thread(target=lambda: found.append(list_models()), daemon=True)
    try:
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "discovery deadlocked"
        assert {"lazy_tiny", "child_family"} <= set(found[0])
    finally:
        for arch in ("lazy_tiny", "child_family"):
            _registry._MODELS.pop(arch, None)
