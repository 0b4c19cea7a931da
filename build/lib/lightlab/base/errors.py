class UserError(Exception):
    """A mistake the user can fix (config, data, paths). run.py prints its message alone, with no
    traceback, and exits with status 2: the message must name the key or file and say the fix."""
