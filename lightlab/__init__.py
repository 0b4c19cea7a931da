"""Framework glue that run.py calls: config checks, run directories, the final summary."""
