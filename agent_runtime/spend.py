"""Money in the runtime: exact amounts, model prices, the cost of a usage, and the request's meter.

Amounts are integer *micro-units* of a currency (1 USD = 1_000_000), read from decimal
strings without ever becoming a float, so that sums over millions of requests do not
drift. A price is micro-units per million tokens; the cost of one answer is

    ceil((input_tokens * input_price + output_tokens * output_price) / 1_000_000)

micro-units: one rounding per answer, always up, so a budget never under-counts.

The meter collects what one request really cost: the LLM manager records each answer
with the price of the chain entry that gave it (``record``), and marks the cost unknown
when an attempt was cut off after the upstream had started generating (``mark_unknown``);
the spend budget then keeps the whole reservation charged.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass, field

from agent_runtime.config import AMOUNT_PATTERN, ModelPrice

MICRO = 1_000_000
_AMOUNT = re.compile(AMOUNT_PATTERN)


def parse_amount(text: str) -> int:
    """Micro-units of a decimal amount (``"2.5"`` -> 2_500_000); exact, at most six decimals."""
    if not _AMOUNT.match(text):
        raise ValueError(f"invalid amount {text!r}: use a decimal such as '12.50' (at most 6 decimals)")
    whole, _, fraction = text.partition(".")
    return int(whole) * MICRO + int(fraction.ljust(6, "0"))


def format_amount(micro: int) -> str:
    """The decimal text of micro-units, trailing zeros beyond cents dropped (``2_500_000`` -> ``"2.50"``)."""
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO)
    digits = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price in micro-units per million tokens."""

    currency: str
    input_per_million: int
    output_per_million: int

    @classmethod
    def from_config(cls, price: ModelPrice) -> Price:
        """Read the config's decimal strings exactly."""
        return cls(
            price.currency, parse_amount(price.input_per_million), parse_amount(price.output_per_million)
        )

    def cost(self, input_tokens: int, output_tokens: int) -> int:
        """Micro-units of one answer, rounded up once."""
        scaled = (
            max(0, input_tokens) * self.input_per_million + max(0, output_tokens) * self.output_per_million
        )
        return -(-scaled // MICRO)


@dataclass(slots=True)
class SpendMeter:
    """What one request spent, per currency, in micro-units."""

    spent: dict[str, int] = field(default_factory=dict)
    unknown: bool = False

    def add(self, price: Price, input_tokens: int, output_tokens: int) -> None:
        """Count one answer at ``price``."""
        self.spent[price.currency] = self.spent.get(price.currency, 0) + price.cost(
            input_tokens, output_tokens
        )

    def of(self, currency: str) -> int:
        """Micro-units spent in ``currency``."""
        return self.spent.get(currency, 0)


# The meter of the request being served (set by the pipeline around the run step when a spend
# budget applies; tasks started by the request inherit it).
CURRENT_METER: ContextVar[SpendMeter | None] = ContextVar("sentient_spend_meter", default=None)


def record(price: Price | None, input_tokens: int, output_tokens: int) -> None:
    """Count an answer against the current request's meter (no meter or no price: nothing)."""
    meter = CURRENT_METER.get()
    if meter is not None and price is not None:
        meter.add(price, input_tokens, output_tokens)


def mark_unknown() -> None:
    """The upstream may have billed an attempt whose usage never arrived (cut off mid-answer)."""
    meter = CURRENT_METER.get()
    if meter is not None:
        meter.unknown = True
