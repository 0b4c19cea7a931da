"""Which process speaks for a job: the one that writes files, prints the summary and records the outcome."""


def is_rank_zero(trainer=None) -> bool:
    """Under a trainer: DDP's global rank 0. Without one: process 0 of whatever started this job's processes (our
    DDP launcher, torchrun, SLURM), as Lightning reads it from RANK / LOCAL_RANK / SLURM_PROCID and keeps it
    current once a strategy has set up its ranks."""
    if trainer is not None:
        return trainer.is_global_zero
    from pytorch_lightning.utilities import rank_zero_only

    return rank_zero_only.rank == 0
