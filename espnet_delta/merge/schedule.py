"""Per-layer merge ratios for selective attention (SA) merging.

SA merging (arXiv 2501.08468) mixes the attention Q/K/V task vectors of the
child model M1 and the adult model M2 with a ratio c_i that depends on the depth
of layer i: lower layers are acoustic and keep more of the child model, upper
layers are closer to the (shared) linguistic task and take more of M2.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Sequence

#: ``depth_power``: c_i = lambda ** (alpha ** (L - 1 - i))
#:     c is lambda at the top layer and approaches 1 towards the bottom (alpha < 1).
#: ``linear_exponent``: c_i = lambda ** (alpha * i)
#:     c is 1 at the bottom layer and decays geometrically with depth.
SCHEDULES = ("depth_power", "linear_exponent")


def layer_coefficients(
    num_layers: int, lam: float, alpha: float, schedule: str = "depth_power"
) -> List[float]:
    """Weight c_i of M1 for layers i = 0 (lowest) .. L-1 (top); M2 gets 1 - c_i.

    Both schedules give c in [0, 1] for lambda in [0, 1] and alpha >= 0, so
    c_i * tau_1 + (1 - c_i) * tau_2 stays a convex combination of task vectors.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    if alpha < 0.0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    top = num_layers - 1
    if schedule == "depth_power":
        return [lam ** (alpha ** (top - i)) for i in range(num_layers)]
    if schedule == "linear_exponent":
        return [lam ** (alpha * i) for i in range(num_layers)]
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


def schedule_formula(schedule: str) -> str:
    """Human-readable formula of a schedule, for logs and reports."""
    return {
        "depth_power": "c_i = lambda^(alpha^(L-1-i))",
        "linear_exponent": "c_i = lambda^(alpha*i)",
    }[schedule]


def format_coefficient_table(tables: Mapping[str, Sequence[float]]) -> str:
    """A fixed-width table ``stack layer c_i 1-c_i`` (one row per layer, bottom first)."""
    lines = [f"{'stack':<10} {'layer':>5} {'c_i (M1)':>10} {'1-c_i (M2)':>11}"]
    for stack, coefs in tables.items():
        for i, c in enumerate(coefs):
            lines.append(f"{stack:<10} {i:>5d} {c:>10.6f} {1.0 - c:>11.6f}")
    return "\n".join(lines)


def log_coefficient_table(
    tables: Mapping[str, Sequence[float]], schedule: str, lam: float, alpha: float
) -> None:
    """Log the per-layer ratios so every merged model documents how it was built."""
    logging.info(
        "SA merge schedule %s: %s (lambda=%g, alpha=%g)",
        schedule,
        schedule_formula(schedule),
        lam,
        alpha,
    )
    for line in format_coefficient_table(tables).splitlines():
        logging.info("%s", line)


def coefficient_tables(
    num_layers: Mapping[str, int], lam: float, alpha: float, schedule: str
) -> Dict[str, List[float]]:
    """One schedule per layer stack (e.g. Whisper's encoder and decoder), each over its own depth."""
    return {
        stack: layer_coefficients(n, lam, alpha, schedule) for stack, n in num_layers.items()
    }
