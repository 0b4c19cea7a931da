"""From a dotted path or a config node to the object: our errors (naming the key and the fix), not Hydra's."""
import importlib

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from lightlab.base.errors import UserError


def locate(dotted_path: str):
    module_name, _, attribute = dotted_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise UserError(f"cannot import '{dotted_path}' ({error})") from None


def build(config: dict, key: str, **runtime):
    """instantiate(config, **runtime), with torch's own argument checks (LBFGS takes one parameter group,
    lr must be positive, ...) and ours reported as a UserError that names the config key."""
    try:
        return instantiate(config, **runtime, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise UserError(f"{key} ({config['_target_']}) cannot be built with these settings: {error.__cause__}. "
                        f"Change the {key}.* keys named there.") from None
