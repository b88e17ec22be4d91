"""Choosing a fault's members from a target's candidates: count, percent or all, seeded.

Pure and deterministic for a given seed, so a rehearsal can be replayed. Enforces the
experiment's blast radius (the largest share of a target any one fault may take).
"""

from __future__ import annotations

import math
import random

from chaos_runner.errors import PreflightError
from chaos_runner.experiment import Selector
from chaos_runner.plugins import Member


def choose(
    candidates: list[Member], selector: Selector, *, fault: str, max_blast_radius: float = 100.0
) -> list[Member]:
    """The members a fault acts on, in a stable order; raises if none or too many."""
    ordered = sorted(candidates, key=lambda m: m.id)
    if not ordered:
        raise PreflightError(f"fault {fault!r}: the selector matches no running member")
    if selector.all:
        wanted = len(ordered)
    elif selector.percent is not None:
        wanted = max(1, math.floor(len(ordered) * selector.percent / 100.0))
    else:
        wanted = selector.count or 1
    if wanted > len(ordered):
        raise PreflightError(
            f"fault {fault!r}: the selector asks for {wanted} member(s) but only "
            f"{len(ordered)} match ({', '.join(m.name for m in ordered)})"
        )
    share = 100.0 * wanted / len(ordered)
    if share > max_blast_radius + 1e-9:
        raise PreflightError(
            f"fault {fault!r}: selects {wanted} of {len(ordered)} members ({share:.0f}%), "
            f"more than safety.max_blast_radius ({max_blast_radius:g}%)"
        )
    rng = random.Random(selector.seed)
    chosen = rng.sample(ordered, wanted)
    return sorted(chosen, key=lambda m: m.id)
