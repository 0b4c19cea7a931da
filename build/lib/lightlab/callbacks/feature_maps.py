"""Record what named layers output (the seed's forward-hook visualisation), for any network.

    with FeatureMaps(module.net, ["features.0", "features.4"]) as maps:
        module.net(images)
    maps["features.0"]   # that layer's output for `images`, detached

Names are those of `network.named_modules()`. The hooks are removed on leaving the block, so a recorder
costs nothing outside it; each call inside overwrites the previous call's maps.
"""
import torch
from torch import nn

from lightlab.base.errors import UserError


class FeatureMaps(dict):
    def __init__(self, network: nn.Module, layer_names: list[str]):
        super().__init__()
        layers = dict(network.named_modules())
        unknown = [name for name in layer_names if name not in layers]
        if unknown:
            candidates = ", ".join(name for name in layers if name) or "(none)"
            raise UserError(f"no layer named {', '.join(map(repr, unknown))} in {type(network).__name__}. "
                            f"Its layers: {candidates}.")
        self.layers = {name: layers[name] for name in layer_names}
        self.handles = []

    def __enter__(self) -> "FeatureMaps":
        for name, layer in self.layers.items():
            self.handles.append(layer.register_forward_hook(self._recorder(name)))
        return self

    def __exit__(self, *exception) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _recorder(self, name: str):
        def record(layer: nn.Module, inputs, output) -> None:
            # A layer may return several tensors (attention: context and weights): each is kept.
            self[name] = output.detach() if isinstance(output, torch.Tensor) else tuple(
                o.detach() if isinstance(o, torch.Tensor) else o for o in output)
        return record
