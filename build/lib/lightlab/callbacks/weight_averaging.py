"""Lightning's EMAWeightAveraging, with one fix: a checkpoint tested or evaluated after fit scores the averaged
weights it was saved for.

A checkpoint written with weight averaging holds the average in `state_dict` and the raw training weights in
`current_model_state`. Lightning's callback reloads the raw weights whenever it has an average model, which it
still has after fit: `trainer.test(ckpt_path=best)` would score the raw weights while `val/acc` (which picked
`best`) was measured on the averaged ones. Only resuming a fit needs the raw weights back.
"""
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn


class EMAWeights(EMAWeightAveraging):
    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
