"""Functions of every kind for the replay tests: recorded here, replayed by import."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import calltape


@dataclass
class Item:
    name: str
    price: float


class Cart:
    """Its instances are recorded as ``self`` (pickled) and rebuilt for replay."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items

    @calltape.record
    def total(self, discount: float = 0.0) -> float:
        return sum(i.price for i in self.items) * (1 - discount)

    @calltape.record
    @classmethod
    def empty_total(cls, currency: str) -> str:
        return f"0 {currency} ({cls.__name__})"

    @classmethod
    @calltape.record
    def named(cls, *names: str) -> list[str]:
        return sorted(names)

    @calltape.record
    @staticmethod
    def tax(amount: float, *, rate: float = 0.2) -> float:
        return round(amount * rate, 2)


@calltape.record
def plain(a: int, b: int = 2, *rest: int, scale: int = 1, **extra: int) -> dict:
    return {"sum": (a + b + sum(rest)) * scale, "extra": sorted(extra)}


@calltape.record
def countdown(n: int):
    while n > 0:
        yield n
        n -= 1
    return "liftoff"


@calltape.record
async def fetch(key: str) -> str:
    await asyncio.sleep(0)
    return key.upper()


@calltape.record
async def ticks(n: int):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


@calltape.record
def fails(x: int) -> int:
    raise ValueError(f"bad value {x}")


def make_nested():
    @calltape.record
    def inner(x: int) -> int:
        return x + 1

    return inner


async def _drain_ticks(n: int) -> list[int]:
    return [i async for i in ticks(n)]


def workload() -> None:
    """One call of each kind."""
    cart = Cart([Item("pen", 1.5), Item("ink", 4.25)])
    cart.total(0.1)
    Cart.empty_total("EUR")
    Cart.named("b", "a")
    Cart.tax(10.0, rate=0.07)
    plain(1, 2, 3, 4, scale=2, flag=1)
    list(countdown(3))
    asyncio.run(fetch("abc"))
    asyncio.run(_drain_ticks(3))
    try:
        fails(7)
    except ValueError:
        pass
    make_nested()(1)


def _joined(*parts):
    return parts


class Slotted:
    """Keeps its parts in slots (as inspect.Signature does)."""

    __slots__ = ("_other", "_parameters")

    def __init__(self, parameters, other=None):
        self._parameters = parameters
        self._other = other


class SigHolder:
    """A walk of `parts` makes and frees many short-lived lists before `sig`."""

    def __init__(self):
        import functools
        import types
        self.parts = [functools.partial(_joined, i, Slotted(i, (i,))) for i in range(50)]
        self.sig = Slotted(types.MappingProxyType({"a": 1}))  # recorded as a marker


@calltape.record
def uses_sig(holder):
    return len(holder.sig._parameters)
