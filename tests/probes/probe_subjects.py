"""Functions of every kind for the probe tests."""

import functools

import calltape


class Cart:
    def __init__(self, items=()):
        self.items = list(items)

    def total(self, tax=0.0):
        return sum(self.items) * (1 + tax)

    @classmethod
    def empty(cls, note="none"):
        return cls()

    @staticmethod
    def add(a, b):
        return a + b

    @property
    def size(self):
        return len(self.items)

    class Line:
        def cost(self, qty, unit):
            return qty * unit


def outer(x):
    def inner(y):
        return y * 2
    return inner(x) + 1


def logged(func):
    @functools.wraps(func)
    def wrapper(*a, **k):
        return func(*a, **k)
    return wrapper


@logged
def decorated(n, *rest, key=None, **extra):
    return n + len(rest)


@calltape.record
def recorded(v):
    return v * 3


def fails(v):
    if v < 0:
        raise ValueError(f"negative: {v}")
    local = v * 10
    return local


def gen(n):
    yield from range(n)


def price(qty, unit=1.0):
    return qty * unit


class Till:
    def __init__(self, rate):
        self.rate = rate

    def ring(self, qty):
        return qty * self.rate


def make_rate(r):
    def rate(qty):
        return qty * r
    return rate
