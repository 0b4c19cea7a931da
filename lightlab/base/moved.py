"""Modules that moved (issue 21's layout): a saved run's config and checkpoint name classes by the paths they had
when the run was written (`_target_: lightning_modules.mlp.MLP`), and those keep importing.

`install()` (called by the lightlab and lightning_modules packages on import) adds an import finder: importing an
old module name gives a module that looks its names up in the new module(s). One table, applied wherever a name is
imported: Hydra's instantiate, our config checks, `load_from_checkpoint`, a user's own script.
"""
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

# old module -> the module(s) its names now live in (lightlab.fast_loop was split in two)
MOVED: dict[str, tuple[str, ...]] = {
    "lightlab.errors": ("lightlab.base.errors",),
    "lightlab.atomic_files": ("lightlab.base.files",),
    "lightlab.fast_loop": ("lightlab.lightning_internals.hook_dispatch", "lightlab.callbacks.progress_bar"),
    "lightlab.distributed": ("lightlab.lightning_internals.ddp_launch",),
    "lightlab.atomic_checkpoints": ("lightlab.callbacks.atomic_checkpoints",),
    "lightlab.checkpoint_checks": ("lightlab.config.checkpoint_checks",),
    "lightlab.config_checks": ("lightlab.config.checks", "lightlab.base.objects", "lightning_modules.optimization"),
    "lightlab.checkpoint_modes": ("lightlab.run.checkpoint_modes",),
    "lightlab.compose": ("lightlab.run.compose",),
    "lightlab.export": ("lightlab.run.export",),
    "lightlab.predict": ("lightlab.run.predict",),
    "lightlab.run_directory": ("lightlab.run.folders",),
    "lightlab.run_record": ("lightlab.run.record",),
    "lightlab.tensorboard_summary": ("lightlab.run.tensorboard_summary",),
    "lightlab.device_slots": ("lightlab.sweeps.device_slots",),
    "lightlab.optuna_pruning": ("lightlab.sweeps.optuna_pruning",),
    "lightlab.sweep_summary": ("lightlab.sweeps.summary", "lightlab.base.files"),
    "lightlab.epoch_speed": ("lightlab.callbacks.epoch_speed",),
    "lightlab.evaluation_images": ("lightlab.callbacks.evaluation_images", "lightlab.callbacks.pictures"),
    "lightlab.feature_maps": ("lightlab.callbacks.feature_maps",),
    "lightlab.finetuning": ("lightlab.callbacks.finetuning",),
    "lightlab.learning_rate_finder": ("lightlab.callbacks.learning_rate_finder",),
    "lightlab.non_finite": ("lightlab.callbacks.non_finite",),
    "lightlab.parameter_histograms": ("lightlab.callbacks.parameter_histograms",),
    "lightlab.preemption": ("lightlab.callbacks.preemption",),
    "lightlab.random_state": ("lightlab.callbacks.random_state",),
    "lightlab.weight_averaging": ("lightlab.callbacks.weight_averaging",),
    "lightning_modules.mlp": ("lightning_modules.networks.mlp",),
    "lightning_modules.cnn": ("lightning_modules.networks.cnn",),
    "lightning_modules.resnet": ("lightning_modules.networks.resnet",),
    "lightning_modules.recurrent": ("lightning_modules.networks.recurrent",),
    "lightning_modules.fast_cifar_net": ("lightning_modules.networks.fast_cifar_net",),
    "lightning_modules.fused_activation": ("lightning_modules.networks.fused_activation",),
    "lightning_modules.task_module": ("lightning_modules.tasks.task_module",),
    "lightning_modules.classification": ("lightning_modules.tasks.classification",),
    "lightning_modules.metric_learning": ("lightning_modules.tasks.metric_learning",),
    "lightning_modules.multitask": ("lightning_modules.tasks.multitask",),
}


class _MovedModule(types.ModuleType):
    def __getattr__(self, name: str):
        for new in MOVED[self.__name__]:
            module = importlib.import_module(new)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(MOVED[self.__name__])}) has no "
                             f"attribute {name!r}")


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        return _MovedModule(spec.name)

    def exec_module(self, module) -> None:
        pass

    def get_code(self, fullname: str):
        """`python -m <old module>` (runpy) runs the code of its (first) new module."""
        new = MOVED[fullname][0]
        return importlib.util.find_spec(new).loader.get_code(new)


def install() -> None:
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
