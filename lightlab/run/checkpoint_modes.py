"""mode=test, predict and export: what run.py does with a trained checkpoint instead of training.

    python run.py mode=test    ckpt_path=logs/mnist_mlp/run_001/checkpoints/epoch007.ckpt
    python run.py mode=predict ckpt_path=… [predict_input=folder/of/pngs]   -> predictions.csv
    python run.py mode=export  ckpt_path=…                                  -> network.pt, .torchscript.pt, .onnx

The checkpoint is evaluated with the config of the run that wrote it (its `.hydra/config.yaml`), not with
conf/'s defaults: the same data settings, network and trainer, so `mode=test` reproduces the run's own test
numbers. Single keys can still be changed on the command line (`data.eval_batch_size=2000`, `trainer.accelerator=
cpu`, `paths.data_dir=…`); group options (`data=cifar10`) would describe another run and are refused.
"""
import csv
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from lightlab.base.errors import UserError
from lightlab.base.files import write_atomically, write_json
from lightlab.base.ranks import is_rank_zero
from lightlab.callbacks.evaluation_images import class_names
from lightlab.run.compose import CONFIG_DIR
from lightlab.run.folders import checkpoint_run_folder

# The keys of this command that say what to do with the checkpoint; every other override changes the saved config.
MODE_KEYS = ("mode", "ckpt_path", "predict_input", "print_config")
_ABSENT = object()


def checkpoint_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The config of the run that wrote cfg.ckpt_path, with this command's overrides applied to it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not cfg.ckpt_path:
        raise UserError(f"mode={cfg.mode} uses a trained checkpoint: "
                        f"add ckpt_path=<run folder>/checkpoints/<file>.ckpt.")
    checkpoint = Path(cfg.ckpt_path).expanduser()
    if not checkpoint.is_file():
        raise UserError(f"ckpt_path={cfg.ckpt_path}: no such file. Give a .ckpt file from a run's checkpoints/ folder.")
    run_dir = checkpoint_run_folder(cfg.ckpt_path)
    saved_file, resolved_file = ((run_dir / ".hydra" / "config.yaml", run_dir / "config.yaml") if run_dir
                                 else (None, None))
    if run_dir is None or not (saved_file.is_file() and resolved_file.is_file()):
        raise UserError(f"ckpt_path={cfg.ckpt_path}: mode={cfg.mode} reads the config of the run that wrote it, "
                        f"<run>/.hydra/config.yaml and <run>/config.yaml beside <run>/checkpoints/, and this "
                        f"checkpoint has none. Keep checkpoints inside their run folder.")
    # Unresolved: paths (${oc.env:DATA_DIR,...}, ${hydra:runtime.output_dir}) resolve for this command, so the
    # data is found where it is now and outputs go to this command's folder.
    saved = OmegaConf.load(saved_file)
    with open_dict(saved):
        saved.experiment_name = OmegaConf.load(resolved_file).experiment_name  # the run's, not this command's
        for key in MODE_KEYS:
            saved[key] = cfg[key]
        saved.ckpt_path = str(checkpoint)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key in MODE_KEYS or override.is_hydra_override():
            continue
        if "." not in key and (CONFIG_DIR / key).is_dir():  # data=…, experiment=…, debug=…
            raise UserError(f"`{override.input_line}`: mode={cfg.mode} uses the checkpoint's own config, and a "
                            f"group option would describe another run. Change single keys instead (e.g. "
                            f"{key}.<setting>=...), or train a run with that option.")
        if override.is_delete():
            raise UserError(f"`{override.input_line}`: mode={cfg.mode} keeps every key of the run's config; set "
                            f"a value instead (e.g. {key}=null).")
        if OmegaConf.select(saved, key, default=_ABSENT) is _ABSENT and not override.is_add():
            raise UserError(f"`{override.input_line}`: the checkpoint's run config ({saved_file}) has no key {key}.")
        OmegaConf.update(saved, key, override.value(), force_add=True)
    if saved.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available() and cfg.mode != "export":
        raise UserError(f"trainer.accelerator={saved.trainer.accelerator} (the run's setting, or this command's) "
                        f"but this machine has no GPU: add trainer.accelerator=cpu"
                        f"{' trainer.precision=32-true' if '16' in str(saved.trainer.get('precision')) else ''}.")
    return saved


def write_predictions(trainer, module, datamodule, cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """predictions.csv: one row per input (id, true label if known, predicted class, one probability per class; a
    regression: id, true value if known, predicted value, in the target's units). A forecaster: forecast.csv, one
    row per window and step ahead (lightlab's datamodules/time_series.py, forecast_rows)."""
    from lightning_modules.tasks.classification import ClassificationModule
    from lightning_modules.tasks.forecasting import ForecastModule
    from lightning_modules.tasks.regression import RegressionModule

    if not isinstance(module, (ClassificationModule, RegressionModule, ForecastModule)):
        raise UserError(f"mode=predict writes class probabilities; {type(module).__name__} (this checkpoint's "
                        f"lightning_module) does not give them. Use mode=test for its metrics.")
    datamodule.predict_input = cfg.predict_input
    # Under DDP every process predicts every input (the prediction batches are not sharded); process 0 writes.
    batches = trainer.predict(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    outputs, truths = (torch.cat([batch[i] for batch in batches]).cpu() for i in (0, 1))
    path = run_dir / ("forecast.csv" if isinstance(module, ForecastModule) else "predictions.csv")
    if isinstance(module, ForecastModule):
        mask = torch.cat([batch[2] for batch in batches]).cpu()
        header, rows = datamodule.forecast_rows(outputs, truths, mask)
        scored = truths[mask]
        known = ~scored.isnan()
        score = {"predict/mae": (outputs[mask] - scored)[known].double().abs().mean()}
        identified = rows
    elif isinstance(module, RegressionModule):
        predicted, actual = outputs.double(), truths.double()
        known = ~actual.isnan()  # NaN: the new rows have no target
        header = ["id", "target", "predicted"]
        rows = [["" if true != true else f"{true:.10g}", f"{guess:.10g}"]
                for true, guess in zip(actual.tolist(), predicted.tolist())]
        score = {"predict/rmse": (predicted[known] - actual[known]).square().mean().sqrt()}
    else:
        names = class_names(datamodule, outputs.shape[1])
        predicted = outputs.argmax(dim=1)
        known = truths >= 0  # -1: new inputs have no label
        header = ["id", "label", "predicted", *(f"probability_{name}" for name in names)]
        rows = [[names[label] if label >= 0 else "", names[guess], *(f"{p:.6g}" for p in probabilities)]
                for label, guess, probabilities in zip(truths.tolist(), predicted.tolist(), outputs.tolist())]
        score = {"predict/acc": (predicted[known] == truths[known]).float().mean()}
    if not isinstance(module, ForecastModule):
        identified = [[row_id, *row] for row_id, row in zip(datamodule.prediction_ids, rows)]

    def write(partial: Path) -> None:
        with open(partial, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(identified)

    if is_rank_zero(trainer):
        write_atomically(path, write)  # a complete file or none
        print(f"{path.stem}: {path} ({len(rows)} rows)")
    metrics = {"predict/count": float(len(rows))}
    if known.any():
        metrics.update({name: float(value) for name, value in score.items()})
    return metrics


def export(module, datamodule, cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """network.pt (the bare network's state_dict) + network.yaml, TorchScript and ONNX, each checked against the
    network on a few test inputs (lightlab/run/export.py); preprocessing.json: class names and input preparation."""
    from lightlab.run.export import export_network
    from lightning_modules.tasks.classification import ClassificationModule
    from lightning_modules.tasks.forecasting import ForecastModule
    from lightning_modules.tasks.regression import RegressionModule

    # Its network alone is not what the task module computes (a regression's or a forecaster's: the standardised
    # target, which preprocessing.json's scaling turns back).
    if not isinstance(module, (ClassificationModule, RegressionModule, ForecastModule)):
        raise UserError(f"mode=export writes a classifier's network; {type(module).__name__} adds heads or a "
                        f"normalisation around module.net that the export would leave out. Load its checkpoint "
                        f"with {type(module).__name__}.load_from_checkpoint(path) instead.")
    checkpoint = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["state_dict"])  # with weight averaging: the average, as evaluated
    if type(datamodule).__qualname__ in checkpoint:  # text: the vocabulary the network was trained with
        datamodule.load_state_dict(checkpoint[type(datamodule).__qualname__])
    datamodule.setup("predict")
    if hasattr(datamodule, "example_inputs"):  # a table, a series: from the checkpoint's state, no file read
        example_inputs = datamodule.example_inputs(8)
    else:
        batch = datamodule.on_after_batch_transfer(next(iter(datamodule.predict_dataloader())), 0)
        example_inputs = tuple(t[:8] for t in batch[:-1])
    for line in export_network(module.eval(), example_inputs, run_dir):
        print(line)
    # What a deployment needs besides the network: the class names, and how raw inputs become its inputs.
    names = class_names(datamodule, module.hparams.get("num_classes", 0))
    if getattr(datamodule, "preprocessing", None) is not None:  # a table: everything fitted on its training rows
        preprocessing = {"inputs": "(numeric, categorical): see lightlab's datamodules/table_columns.py",
                         **datamodule.preprocessing.state()}
    elif getattr(datamodule, "fitted", None) is not None:  # a series: its columns, scaling and time grid
        preprocessing = {"inputs": "(history, future covariates), outputs (batch, horizon, targets), each "
                                   "standardised by mean and std: see lightlab's datamodules/time_series.py",
                         **datamodule.fitted}
    elif hasattr(datamodule, "vocabulary"):
        from datamodules.vocabulary import PAD_ID, UNKNOWN_ID

        settings = datamodule.hparams
        preprocessing = {"tokenizer": settings.tokenizer, "lowercase": settings.lowercase,
                         "max_length": settings.max_length, "padding_id": PAD_ID, "unknown_id": UNKNOWN_ID,
                         "vocabulary": datamodule.vocabulary.tokens}
    else:
        preprocessing = {"input_shape": list(datamodule.input_shape), "pixels": "x / 255, then (x - mean) / std",
                         "mean": datamodule.mean, "std": datamodule.std}
    write_json(run_dir / "preprocessing.json", {"classes": names, **preprocessing}, indent=1)
    print(f"preprocessing: wrote {run_dir / 'preprocessing.json'} (class names, {', '.join(preprocessing)})")
    return {}
