"""Export a task module's network for use without Lightning: state_dict + constructor config, TorchScript, ONNX.

    network.yaml            the bare network's constructor call: _target_ and every argument
    network.pt              its state_dict:  net = instantiate(network.yaml); net.load_state_dict(torch.load(...))
    network.torchscript.pt  torch.jit.trace of it: torch.jit.load(path) runs it without our code
    network.onnx            torch.onnx.export of it, with a dynamic batch axis: for onnxruntime and friends

Each file is written under a temporary name, loaded back, and its outputs compared with the eager network's on
the example inputs (and on their first half: a second batch size); only then is it renamed into place. (ONNX
without onnxruntime installed is the exception: written unchecked, and the printed line says so.)
The exported network is `module.net` alone: a module that applies log_softmax (NLLLoss) does so outside it.
"""
import contextlib
import importlib
import inspect
import logging
import warnings
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lightlab.base.errors import UserError
from lightlab.base.files import write_atomically
from lightlab.lightning_internals.trainer_state import ONNX_REGISTRATION_LOGGER

# float32 on the CPU and the same ops: differences are rounding. TorchScript runs the very same kernels (in
# practice bit-equal); onnxruntime has its own fused and reordered ones.
EXACT_TOLERANCE = 1e-5
ONNX_TOLERANCE = 1e-4
ONNX_PACKAGES = "pip install onnx onnxscript onnxruntime"
YAML_HEADER = """\
# The network's constructor call. Without Lightning:
#   net = hydra.utils.instantiate(omegaconf.OmegaConf.load("network.yaml"), _convert_="all")
#   net.load_state_dict(torch.load("network.pt", weights_only=True)); net.eval()
"""


def export_network(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], out_dir: Path) -> list[str]:
    """Write network.yaml, network.pt, network.torchscript.pt and network.onnx of module.net into out_dir, each
    checked against the eager network on example_inputs (a batch of 2 or more also checks a second batch size).
    Returns one line per step: what was written or skipped, and the measured differences. Raises UserError when a
    file would compute something else than the network (that file is then not written)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    network = bare_network(module)
    # float inputs in float32 like the network; token ids and lengths keep their integer type.
    inputs = tuple(x.detach().cpu().float() if x.is_floating_point() else x.detach().cpu() for x in example_inputs)
    with quiet_export():
        return [check_against_module(module, network, inputs),
                export_state_dict(network, module.network_config, inputs, out_dir),
                export_torchscript(network, inputs, out_dir),
                export_onnx(network, inputs, out_dir)]


def bare_network(module: torch.nn.Module) -> torch.nn.Module:
    """A fresh copy of module.net on the CPU in eval mode: no compile wrapper, no channels_last hooks."""
    config = getattr(module, "network_config", None)
    if config is None:
        raise UserError(f"{type(module).__name__} has no network_config (recorded by TaskModule.build_network): "
                        f"only a task module's network can be exported.")
    network = instantiate(config, _convert_="all")
    # load_state_dict copies into the fresh float32, contiguous CPU tensors, whatever device, dtype or memory
    # format the trained ones have. nn.Module.compile keeps the parameter names, so the keys match.
    try:
        network.load_state_dict(module.net.state_dict())
    except RuntimeError as error:  # missing keys or other shapes: network_config builds another network
        raise UserError(f"the network built from {type(module).__name__}.network_config does not take module.net's "
                        f"weights: {str(error).splitlines()[-1].strip()}") from None
    return network.float().eval()


@contextlib.contextmanager
def quiet_export():
    # torch 2.13 deprecates torch.jit and the TorchScript-based ONNX exporter; both still work, and we use them on
    # purpose (see export_torchscript, export_onnx). Other warnings (a TracerWarning about a value fixed at trace
    # time) stay visible; the outputs are checked on two batch sizes anyway.
    registration = logging.getLogger(ONNX_REGISTRATION_LOGGER)
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms", ...
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", r".*torch\.jit\.\w+` is deprecated", DeprecationWarning)
            warnings.filterwarnings("ignore", r".*legacy TorchScript-based ONNX export", DeprecationWarning)
            warnings.filterwarnings("ignore", r"The feature will be removed", DeprecationWarning)
            yield
    finally:
        registration.setLevel(level)


def check_against_module(module: torch.nn.Module, network: torch.nn.Module, inputs: tuple) -> str:
    # The rebuilt network must compute what module.net computes: a constructor argument missing from
    # network_config (output_scale, a dropout rate, ...) would not show in the state_dict.
    parameter = next(module.net.parameters(), torch.zeros(()))
    was_training = module.net.training
    module.net.eval()
    try:
        # force_eager: a compiled network runs its plain forward, with no compile wait for one batch.
        with torch.compiler.set_stance("force_eager"):
            outputs = module.net(*(x.to(parameter.device, parameter.dtype) if x.is_floating_point()
                                   else x.to(parameter.device) for x in inputs))
    finally:
        module.net.train(was_training)
    expected = network(*inputs)
    difference = max_difference(outputs, expected)
    # Another device (TF32 convolutions on CUDA) or precision rounds differently: then compare relative to the
    # outputs' size; a wrong constructor argument changes them far more.
    exact = parameter.device.type == "cpu" and parameter.dtype == torch.float32
    tolerance = EXACT_TOLERANCE if exact else 2e-2 * max(1.0, expected.abs().max().item())
    if not difference <= tolerance:
        raise UserError(f"the network rebuilt from {type(module).__name__}.network_config differs from module.net "
                        f"by up to {difference:.1e} (tolerance {tolerance:.0e}): network_config misses a "
                        f"constructor argument. Nothing was written.")
    return (f"network: {type(network).__name__}, {sum(p.numel() for p in network.parameters()):,} parameters; "
            f"rebuilt from network_config: max abs difference from module.net {difference:.1e} "
            f"({parameter.device.type}, {str(parameter.dtype).removeprefix('torch.')})")


def export_state_dict(network: torch.nn.Module, config: dict, inputs: tuple, out_dir: Path) -> str:
    # Plain data: OmegaConf writes the dict (a DictConfig too) as YAML, keys in their order, _target_ first.
    write_atomically(out_dir / "network.yaml",
                     lambda path: path.write_text(YAML_HEADER + OmegaConf.to_yaml(OmegaConf.create(config))))

    def verify(path: Path) -> str:
        # The YAML header's recipe, followed literally: no Lightning, no module.
        rebuilt = instantiate(OmegaConf.load(out_dir / "network.yaml"), _convert_="all")
        rebuilt.load_state_dict(torch.load(path, weights_only=True))
        differences = [max_difference(rebuilt.eval()(*batch), network(*batch)) for batch in batches(inputs)]
        check("network.pt", differences, EXACT_TOLERANCE)
        return describe(differences, inputs, EXACT_TOLERANCE)

    measured = write_atomically(out_dir / "network.pt", lambda path: torch.save(network.state_dict(), path), verify)
    return (f"state_dict: wrote {out_dir / 'network.pt'} and network.yaml ({config['_target_']}); "
            f"rebuilt from them without Lightning: {measured}")


def export_torchscript(network: torch.nn.Module, inputs: tuple, out_dir: Path) -> str:
    path = out_dir / "network.torchscript.pt"
    # trace, not script: the sequence models rebind a PackedSequence variable to a Tensor, which script rejects;
    # trace records pack_padded_sequence as ops on the lengths, so a traced LSTM takes any batch size and length.
    try:
        traced = torch.jit.trace(network, inputs)
    except Exception as error:
        path.unlink(missing_ok=True)  # an earlier export's file would no longer match network.pt
        return f"TorchScript: failed for {type(network).__name__}: torch.jit.trace: {first_line(error)}"

    def verify(path: Path) -> str:
        loaded = torch.jit.load(path)
        differences = [max_difference(loaded(*batch), network(*batch)) for batch in batches(inputs)]
        check("network.torchscript.pt", differences, EXACT_TOLERANCE)
        return describe(differences, inputs, EXACT_TOLERANCE)

    measured = write_atomically(path, lambda path: torch.jit.save(traced, path), verify)
    return f"TorchScript: wrote {path} (torch.jit.trace); {measured}"


class ExportFailed(Exception):
    pass


def export_onnx(network: torch.nn.Module, inputs: tuple, out_dir: Path) -> str:
    path = out_dir / "network.onnx"
    missing = [name for name in ("onnx", "onnxscript") if not importable(name)]
    if missing:
        stale = " (removed the earlier network.onnx)" if path.exists() else ""
        path.unlink(missing_ok=True)
        return (f"ONNX: skipped: the {' and '.join(missing)} package{'s are' if len(missing) > 1 else ' is'} "
                f"not installed ({ONNX_PACKAGES}){stale}")
    import onnx

    # Named after forward's arguments (x; ids, lengths). Every input is batch-first; token ids (B, T) also vary
    # in length. The image size stays fixed: an MLP's or CNN's head is sized for it.
    names = list(inspect.signature(network.forward).parameters)[:len(inputs)]
    axes = {name: {0: "batch", **({1: "tokens"} if not x.is_floating_point() and x.dim() == 2 else {})}
            for name, x in zip(names, inputs)}
    # AUTO: dynamic unless the model fixes the size (verify reads which it became from the file).
    dynamic_shapes = tuple({axis: torch.export.Dim.AUTO for axis in axes[name]} for name in names)
    common = dict(input_names=names, output_names=["outputs"], verbose=False)
    # The torch.export-based exporter first: torch's default, the one being developed. torch.export cannot
    # capture pack_padded_sequence (its sizes come from the lengths' values), so the sequence models fall back to
    # the TorchScript-based one, which maps packed RNNs to ONNX's RNN/LSTM/GRU ops with sequence lengths.
    exporters = {
        "torch.export-based exporter": lambda file: torch.onnx.export(
            network, inputs, str(file), dynamo=True, external_data=False, dynamic_shapes=dynamic_shapes, **common),
        "TorchScript-based exporter": lambda file: torch.onnx.export(
            network, inputs, str(file), dynamo=False, dynamic_axes={**axes, "outputs": {0: "batch"}}, **common)}
    used, failures = [], []

    def write(file: Path) -> None:
        for exporter, export in exporters.items():
            try:
                with contextlib.redirect_stdout(None):  # the torch.export-based exporter prints its progress
                    export(file)
                used.append(exporter)
                return
            except Exception as error:
                failures.append(f"{exporter}: {first_line(error)}")
        raise ExportFailed

    def verify(file: Path) -> str:
        model = onnx.load(str(file))
        onnx.checker.check_model(model)
        batch_axis = model.graph.input[0].type.tensor_type.shape.dim[0]
        shape = "dynamic batch axis" if batch_axis.dim_param else f"batch size fixed at {batch_axis.dim_value}"
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if not importable("onnxruntime"):
            return f"opset {opset}, {shape}; not verified: onnxruntime is not installed ({ONNX_PACKAGES})"
        import onnxruntime
        session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        feeds = [x.name for x in session.get_inputs()]
        checked = batches(inputs) if batch_axis.dim_param else [inputs]  # a fixed size runs at that size only
        outputs = [session.run(None, {feed: x.numpy() for feed, x in zip(feeds, batch)})[0] for batch in checked]
        differences = [max_difference(torch.from_numpy(out), network(*batch)) for out, batch in zip(outputs, checked)]
        check("network.onnx", differences, ONNX_TOLERANCE)
        return f"opset {opset}, {shape}; onnxruntime: {describe(differences, inputs, ONNX_TOLERANCE)}"

    try:
        measured = write_atomically(path, write, verify)
    except ExportFailed:
        path.unlink(missing_ok=True)  # an earlier export's file would no longer match network.pt
        return f"ONNX: failed for {type(network).__name__}: {'; '.join(failures)}"
    except UserError:
        raise  # written, but computes something else
    except Exception as error:  # onnx's checker or onnxruntime rejects the file
        path.unlink(missing_ok=True)
        return f"ONNX: failed for {type(network).__name__}: the exported file does not load: {first_line(error)}"
    fallback = f"; the torch.export-based exporter failed: {failures[0].split(': ', 1)[1]}" if failures else ""
    return f"ONNX: wrote {path} ({used[0]}{fallback}); {measured}"


def batches(inputs: tuple) -> list[tuple]:
    # The example batch and its first half: a traced or exported graph that fixed the batch size fails on the second.
    half = len(inputs[0]) // 2
    return [inputs] + ([tuple(x[:half] for x in inputs)] if half else [])


def max_difference(outputs: torch.Tensor, expected: torch.Tensor) -> float:
    if outputs.shape != expected.shape:
        raise UserError(f"an exported network gives outputs of shape {tuple(outputs.shape)}, the network "
                        f"{tuple(expected.shape)}")
    return (outputs.float().cpu() - expected.float().cpu()).abs().max().item()


def check(name: str, differences: list[float], tolerance: float) -> None:
    if not max(differences) <= tolerance:  # NaN fails too
        raise UserError(f"{name}: its outputs differ from the network's by up to {max(differences):.1e} "
                        f"(tolerance {tolerance:.0e}); {name} was not written.")


def describe(differences: list[float], inputs: tuple, tolerance: float) -> str:
    sizes = [len(inputs[0]), len(inputs[0]) // 2][:len(differences)]
    return (f"max abs difference {max(differences):.1e} (tolerance {tolerance:.0e}) on batch "
            f"size{'s' if len(sizes) > 1 else ''} {' and '.join(map(str, sizes))}")


def importable(name: str) -> bool:
    # Imported, not just found: an installed package that fails to import (a numpy it was not built for) is
    # as missing as an absent one.
    try:
        importlib.import_module(name)
        return True
    except ImportError:  # also a module set to None in sys.modules (how a test hides a package)
        return False


def first_line(error: Exception) -> str:
    cause = error.__cause__ or error  # the torch.export-based exporter wraps the real error
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]
