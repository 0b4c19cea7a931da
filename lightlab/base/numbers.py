"""How a number is shown to a person (console tables, summary.md): by its magnitude, never as 0.0000."""
import math


def format_number(value: float) -> str:
    """4 significant digits: 0.001, 3e-05, 0.9728, 2.009; counts and rates from 10 000 up as whole numbers (27378)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.0f}" if 1e4 <= abs(value) < 1e7 else f"{value:.4g}"
