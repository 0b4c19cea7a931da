"""Lightning's learning-rate range test, as a config switch (`lr_finder.enabled=true`).

It trains for `num_steps` steps with an exponentially rising learning rate, restores the weights,
and suggests the rate where the loss fell fastest. The curve goes to lr_finder.json and lr_finder.png
in the run directory and to TensorBoard (image "lr_finder").
"""
from pathlib import Path

from lightlab.base.files import write_atomically, write_json
from lightlab.base.loggers import tensorboard_loggers


class LearningRateFinder:
    def __init__(self, enabled: bool = False, apply: bool = True, min_lr: float = 1e-6, max_lr: float = 1.0,
                 num_steps: int = 100, early_stop_threshold: float | None = 4.0):
        self.enabled, self.apply = enabled, apply
        self.search = dict(min_lr=min_lr, max_lr=max_lr, num_training=num_steps,
                           early_stop_threshold=early_stop_threshold)

    def run(self, trainer, module, datamodule, run_dir: Path, resuming: bool = False) -> float | None:
        """The suggested learning rate (None when disabled or no suggestion); with `apply`, the
        module's optimizer config takes it (and a cyclic schedule's max_lr), so training and the
        checkpoint's hparams use it."""
        if not self.enabled:
            return None
        if resuming:  # (also every re-run of an interrupted named run with lr_finder.enabled=true)
            print("lr finder: skipped: this run continues from a checkpoint, whose optimizer keeps its learning rate")
            return None
        import matplotlib
        from pytorch_lightning.tuner import Tuner

        matplotlib.use("Agg")
        finder = Tuner(trainer).lr_find(module, datamodule=datamodule, update_attr=False, **self.search)
        suggestion = finder.suggestion() if finder else None
        initial = module.hparams.optimizer["lr"]
        applied = bool(self.apply and suggestion)
        if applied:
            module.hparams.optimizer["lr"] = suggestion
            schedule = (module.hparams.get("scheduler") or {}).get("scheduler", {})
            if "max_lr" in schedule:  # OneCycle/Cyclic set the rate from max_lr: the suggestion is that peak
                schedule["max_lr"] = suggestion
        write_json(run_dir / "lr_finder.json", {"suggestion": suggestion, "applied": applied, "configured_lr": initial,
                                                "lr": finder.results["lr"], "loss": finder.results["loss"]}, indent=1)
        figure = finder.plot(suggest=suggestion is not None)
        write_atomically(run_dir / "lr_finder.png", lambda partial: figure.savefig(partial, format="png", dpi=100))
        for logger in tensorboard_loggers(trainer):
            logger.experiment.add_figure("lr_finder", figure, global_step=0)
        verb = "training with it" if applied else f"only reported (training with the configured {initial:g})"
        print(f"lr finder: suggested lr {suggestion if suggestion is None else f'{suggestion:.3g}'}; {verb}")
        return suggestion
