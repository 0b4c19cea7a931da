"""Export (lightlab/run/export.py): every model config's network as a state_dict + YAML that rebuild it without
Lightning, as TorchScript and as ONNX, each giving the trained network's outputs, also at another batch size."""
import re
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lightlab.base.errors import UserError
from lightlab.run.compose import CONFIG_DIR, compose_config
from lightlab.run.export import export_network
from lightning_modules.tasks.classification import ClassificationModule
from tests.conftest import ROOT

# The tests load TorchScript files themselves: torch 2.13 deprecates torch.jit (export_network silences its own).
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
# (tabular_mlp's and the forecasters' exports, with two inputs and the fitted preprocessing: tests/runs/test_tables.py
# and tests/unit/test_time_series.py)
MODELS = [p.stem for p in sorted((CONFIG_DIR / "model").glob("*.yaml")) if not p.name.startswith("_")
          and p.stem != "tabular_mlp" and not p.stem.startswith("forecast_")]
# Per network class: small widths (a fast test) and an input shape it takes. A new class fails here until added.
SMALL = {"MLP": ({"hidden_dims": [16, 16]}, [1, 28, 28]),
         "BasicCNN": ({"channels": [4, 8, 8], "head_width": 16}, [1, 28, 28]),
         "ResNet": ({"widths": [4, 8, 8, 8]}, [3, 32, 32]),
         "FastCIFARNet": ({"widths": [8, 16, 16]}, [3, 32, 32]),
         "RecurrentClassifier": ({"embedding_dim": 8, "hidden_size": 8, "attention_width": 8}, [12])}
VOCABULARY = 50
OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}
LOSS = {"_target_": "torch.nn.CrossEntropyLoss"}


def token_batch(lengths: list[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, VOCABULARY, (len(lengths), max(lengths)), generator=generator)
    ids[torch.arange(max(lengths)) >= torch.tensor(lengths)[:, None]] = 0  # padding
    return ids, torch.tensor(lengths)


def trained_module(model: str, tmp_path: Path, network: dict | None = None,
                   **settings) -> tuple[ClassificationModule, tuple, tuple]:
    """The model config's ClassificationModule at small widths, with state that differs from a fresh network
    (BatchNorm statistics, FastCIFARNet's whitening); an example batch and one of another size (and length)."""
    net = OmegaConf.to_container(compose_config([f"model={model}"], output_dir=str(tmp_path)).model, resolve=True)
    small, input_shape = SMALL[net["_target_"].rsplit(".", 1)[1]]
    text = len(input_shape) == 1
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    module = ClassificationModule({**net, **small, **(network or {})}, OPTIMIZER, LOSS, input_shape, num_classes=5,
                                  **settings, **({"vocabulary_size": VOCABULARY} if text else {}))
    if text:
        example, other = token_batch([12, 5, 8], generator), token_batch([7, 1, 3, 7, 2], generator)
    else:
        example, other = (torch.randn(4, *input_shape, generator=generator),), (torch.randn(7, *input_shape),)
    if hasattr(module.net, "initialize_from_data"):
        module.net.initialize_from_data(torch.randn(64, *input_shape, generator=generator))
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        module.net.train()(*example)  # moves the BatchNorm running statistics off their defaults
    module.net.eval()
    return module, example, other


def eager(module, inputs: tuple) -> torch.Tensor:
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        return module.net(*inputs)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_exports_and_each_file_reproduces_the_network(model, tmp_path):
    module, example, other = trained_module(model, tmp_path)
    text = len(example) == 2  # (ids, lengths)
    lines = export_network(module, example, tmp_path / "export")
    files = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert files == ["network.onnx", "network.pt", "network.torchscript.pt", "network.yaml"]  # no *.partial left
    assert [line.split(":")[0] for line in lines] == ["network", "state_dict", "TorchScript", "ONNX"]
    assert all("max abs difference" in line for line in lines)

    with torch.no_grad():
        # state_dict + YAML, the recipe in the YAML's header: no module, no Lightning.
        config = OmegaConf.load(tmp_path / "export" / "network.yaml")
        rebuilt = instantiate(config, _convert_="all").eval()
        assert not torch.allclose(rebuilt(*example), eager(module, example))  # a fresh network differs...
        rebuilt.load_state_dict(torch.load(tmp_path / "export" / "network.pt", weights_only=True))
        for inputs in (example, other):  # ...and the loaded one is the trained one
            torch.testing.assert_close(rebuilt(*inputs), eager(module, inputs), rtol=0, atol=1e-6)

        # TorchScript: traced on `example`, run on another batch size (and, for text, other lengths).
        scripted = torch.jit.load(tmp_path / "export" / "network.torchscript.pt")
        for inputs in (example, other):
            torch.testing.assert_close(scripted(*inputs), eager(module, inputs), rtol=0, atol=1e-5)

    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "network.onnx"),
                                           providers=["CPUExecutionProvider"])
    names = [x.name for x in session.get_inputs()]
    assert names == (["ids", "lengths"] if text else ["x"])
    for inputs in (example, other):
        outputs = session.run(None, {name: x.numpy() for name, x in zip(names, inputs)})[0]
        torch.testing.assert_close(torch.from_numpy(outputs), eager(module, inputs), rtol=0, atol=1e-4)
    # torch.export cannot capture packed sequences; the sequence models use the TorchScript-based exporter.
    exporter = "TorchScript-based exporter" if text else "torch.export-based exporter"
    assert f"({exporter}" in lines[3] and "dynamic batch axis" in lines[3]


def test_a_compiled_channels_last_module_exports_its_bare_network(tmp_path):
    module, example, other = trained_module("cnn", tmp_path, compile=True, channels_last=True)
    assert not any(key.startswith("_orig_mod") for key in module.net.state_dict())
    lines = export_network(module, example, tmp_path / "export")
    # channels_last convolutions round differently from the bare network's contiguous ones.
    assert float(re.search(r"difference from module.net (\S+)", lines[0])[1]) < 1e-5
    scripted = torch.jit.load(tmp_path / "export" / "network.torchscript.pt")
    with torch.no_grad():
        torch.testing.assert_close(scripted(*other), eager(module, other), rtol=0, atol=1e-5)
    assert module.net._compiled_call_impl is not None  # the module itself stays compiled


def test_the_fused_bias_relu_activation_exports_as_plain_ops(tmp_path):
    # A trace cannot save the Python autograd.Function: under tracing the layer runs relu(x + bias) as torch ops.
    module, example, other = trained_module("mlp", tmp_path, network={"activation": "fused_bias_relu"})
    lines = export_network(module, example, tmp_path / "export")
    assert [line.split(": wrote")[0] for line in lines[1:]] == ["state_dict", "TorchScript", "ONNX"]
    scripted = torch.jit.load(tmp_path / "export" / "network.torchscript.pt")
    assert "FusedBiasReLU" not in str(scripted.graph)
    with torch.no_grad():
        torch.testing.assert_close(scripted(*other), eager(module, other), rtol=0, atol=1e-5)


# onnxscript imports onnx: without onnx it is missing too (unless an earlier test in this process imported it, so
# both are hidden explicitly and the message does not depend on the test order).
@pytest.mark.parametrize("hidden,missing", [(["onnx", "onnxscript"], "the onnx and onnxscript packages are"),
                                            (["onnxscript"], "the onnxscript package is")])
def test_onnx_is_skipped_with_the_install_command_when_onnx_is_missing(hidden, missing, tmp_path, monkeypatch):
    module, example, _ = trained_module("mlp", tmp_path)
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "network.onnx").write_text("an earlier export's")  # would not match the new network.pt
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)  # `import <name>` raises ImportError
    lines = export_network(module, example, tmp_path / "export")
    assert lines[3] == (f"ONNX: skipped: {missing} not installed (pip install onnx onnxscript onnxruntime) "
                        "(removed the earlier network.onnx)")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "network.pt", "network.torchscript.pt", "network.yaml"]


def test_a_file_that_computes_something_else_is_an_error_and_not_written(tmp_path, monkeypatch):
    module, example, _ = trained_module("mlp", tmp_path)
    load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda path: (lambda *inputs: load(path)(*inputs) + 1e-3))
    with pytest.raises(UserError, match=r"network.torchscript.pt: its outputs differ .* by up to 1.0e-03"):
        export_network(module, example, tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["network.pt", "network.yaml"]


@pytest.mark.parametrize("change,error", [({"output_scale": 1.0}, "network_config misses a constructor argument"),
                                          ({"widths": [8, 16, 32]}, "does not take module.net's weights")])
def test_a_network_config_that_builds_another_network_is_an_error(change, error, tmp_path):
    module, example, _ = trained_module("fast_cifar", tmp_path)
    module.network_config.update(change)  # output_scale is not in the state_dict: only the outputs show it
    with pytest.raises(UserError, match=error):
        export_network(module, example, tmp_path / "export")
    assert not (tmp_path / "export").exists() or not any((tmp_path / "export").iterdir())


@pytest.mark.runs
def test_exported_files_run_in_a_process_without_lightning(tmp_path):
    for model in ("mlp", "bilstm_attention"):
        module, example, _ = trained_module(model, tmp_path)
        export_network(module, example, tmp_path / model)
        torch.save({"inputs": example, "outputs": eager(module, example)}, tmp_path / model / "expected.pt")
    program = f"""
import sys
sys.modules["pytorch_lightning"] = sys.modules["lightning"] = None  # importing either now fails
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
for model in ("mlp", "bilstm_attention"):
    folder = {str(tmp_path)!r} + "/" + model
    expected = torch.load(folder + "/expected.pt", weights_only=True)
    net = instantiate(OmegaConf.load(folder + "/network.yaml"), _convert_="all")
    net.load_state_dict(torch.load(folder + "/network.pt", weights_only=True))
    with torch.no_grad():
        scripted = torch.jit.load(folder + "/network.torchscript.pt")
        for outputs in (net.eval()(*expected["inputs"]), scripted(*expected["inputs"])):
            torch.testing.assert_close(outputs, expected["outputs"], rtol=0, atol=1e-5)
    print(model, "ok")
"""
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mlp", "ok", "bilstm_attention", "ok"]
