"""A small shop that records its calls: run it, then read the tape.

    python -m calltape.examples.shop                # records the two decorated functions
    calltape run -m calltape.examples.shop          # records every function of the shop
"""

from __future__ import annotations

import calltape


@calltape.record
def price(qty: int, unit: float, currency: str = "EUR", *, discount: float = 0.0) -> float:
    """Price of an order line."""
    return round(qty * unit * (1 - discount), 2)


@calltape.record
def checkout(cart: list[tuple[int, float]], password: str) -> float:
    """Total of a cart; the password is recorded as <redacted>."""
    return sum(price(q, u, discount=0.1 if q > 2 else 0.0) for q, u in cart)


def parse_line(line: str) -> tuple[int, float]:
    """'3 x 9.50' -> (3, 9.5): not decorated, recorded under `calltape run`."""
    qty, _, unit = line.partition(" x ")
    return int(qty), float(unit)


def main() -> None:
    for i in range(1000):
        cart = [parse_line(f"{1 + i % 4} x 9.50"), parse_line("2 x 3.25")]
        checkout(cart, password="hunter2")
    calltape.flush()
    tape = calltape.open(trust=True)
    print(tape)
    for fn in tape.functions():
        print(f"  {fn.qualname:28} {fn.calls:6} calls  total {fn.total * 1e3:8.3f} ms"
              f"  max {fn.max * 1e6:8.1f} us")
    print("  last call:", tape.calls("checkout")[-1])


if __name__ == "__main__":
    main()
