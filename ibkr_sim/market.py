"""Deterministic prices: a seeded random walk on each instrument's minTick grid, scripted paths, set prices.

Every instrument has its own generator seeded from ``(seed, conId)``, so its path does not depend on
which other instruments were stepped, nor in which order.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ibkr_sim.universe import SimContract


def tick_decimals(tick: float) -> int:
    """Number of decimals needed to write multiples of ``tick`` exactly."""
    text = f"{tick:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def on_grid(price: float, tick: float) -> float:
    """Round ``price`` to the nearest multiple of ``tick``."""
    return round(round(price / tick) * tick, tick_decimals(tick))


def conforms(price: float, tick: float) -> bool:
    """Whether ``price`` is a multiple of ``tick`` (within float noise)."""
    steps = price / tick
    return abs(steps - round(steps)) < 1e-6


@dataclass(slots=True)
class _Track:
    price: float
    tick: float
    sigma_ticks: float
    rng: random.Random
    script: deque[float] = field(default_factory=deque)


class PriceProcess:
    """Current price of every instrument and how it moves."""

    def __init__(self, seed: int = 0, volatility: float = 0.0005) -> None:
        self.seed = seed
        self.volatility = volatility
        self._tracks: dict[int, _Track] = {}

    def _track(self, inst: SimContract) -> _Track:
        track = self._tracks.get(inst.con_id)
        if track is None:
            tick = inst.min_tick
            start = max(on_grid(inst.ref_price, tick), tick)
            sigma = max(1.0, start * self.volatility / tick)
            track = _Track(start, tick, sigma, random.Random(f"{self.seed}:{inst.con_id}"))
            self._tracks[inst.con_id] = track
        return track

    def price(self, inst: SimContract) -> float:
        """The instrument's current price (its reference price until it moves)."""
        return self._track(inst).price

    def set_price(self, inst: SimContract, price: float) -> float:
        """Set the current price (rounded to the tick grid); returns the price set."""
        track = self._track(inst)
        track.price = max(on_grid(price, track.tick), track.tick)
        return track.price

    def script(self, inst: SimContract, prices: Iterable[float]) -> None:
        """Queue prices that the next steps take, one per step, before the random walk resumes."""
        track = self._track(inst)
        track.script.extend(prices)

    def step(self, inst: SimContract) -> float:
        """Move the price one step: the next scripted price, else one random-walk step."""
        track = self._track(inst)
        if track.script:
            return self.set_price(inst, track.script.popleft())
        move = round(track.rng.gauss(0.0, track.sigma_ticks))
        track.price = max(on_grid(track.price + move * track.tick, track.tick), track.tick)
        return track.price

    def has_script(self, inst: SimContract) -> bool:
        """Whether scripted prices are still queued for the instrument."""
        track = self._tracks.get(inst.con_id)
        return bool(track and track.script)
