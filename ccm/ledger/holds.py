"""How much to hold for a request, and how to keep the hold ahead of a long answer.

Claude Code sends `max_tokens: 128000` on every request, so holding the worst case would hold $3.20 of output on a
$25/M model: a $5 key could run one request at a time. ccm holds instead:

    input part   the locally counted input tokens, plus `input_slack` (tokenizers differ), at the dearest input-side
                 rate of the model (a 1-hour cache write is 2x input: the hold never assumes the cheap cache read)
    output part  `min(max_tokens, output_allowance)` output tokens (4,096 by default)

all with the key's markup, rounded up to the nano-dollar. As the answer streams, `OutputMeter.grow` extends the hold
by `step` output tokens whenever what is held covers fewer than `margin` more tokens than were produced; when an
extension is refused (the balance or budget is gone), it says stop, and the request path ends the answer there
(billed as far as it went, `truncated`). docs/keys-and-credits.md proves the bound this gives on the overshoot.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, localcontext

from ccm.frozen import frozen
from ccm.ledger.cost import EXACT, HUNDRED, MILLION, THOUSAND, rates
from ccm.ledger.ledger import Ledger
from ccm.ledger.money import Money
from ccm.ledger.records import Hold
from ccm.ledger.refusals import Refusal
from ccm.table import Price

INPUT_SIDE = ("input", "cache_write_5m", "cache_write_1h", "cache_read")


@frozen
class HoldPolicy:
    output_allowance: int = 4096  # output tokens held up front (most of Claude Code's answers are shorter)
    step: int = 4096  # output tokens added by each extension
    margin: int = 1024  # extend when what is held covers fewer than this many more output tokens
    input_slack: Decimal = Decimal("0.10")  # the upstream may count up to 10% more input than ccm's tokenizer


DEFAULT_POLICY = HoldPolicy()


def _charged_ceiling(usd: Decimal, markup: Decimal) -> Money:
    with localcontext(EXACT):
        return int((usd * (1 + markup / HUNDRED)).scaleb(9).to_integral_value(rounding=ROUND_CEILING))


def input_part(price: Price, markup: Decimal, input_tokens: int, policy: HoldPolicy = DEFAULT_POLICY) -> Money:
    """What the input of a request can cost at most: every counted token (plus the slack) at the dearest
    input-side rate."""
    table = rates(price)
    dearest = max(table[c][0] for c in INPUT_SIDE)
    with localcontext(EXACT):
        tokens = (input_tokens * (1 + policy.input_slack)).to_integral_value(rounding=ROUND_CEILING)
        return _charged_ceiling(tokens * dearest / MILLION, markup)


def output_cost(price: Price, markup: Decimal, tokens: int) -> Money:
    with localcontext(EXACT):
        return _charged_ceiling(tokens * price.output / MILLION, markup)


def search_cost(price: Price, markup: Decimal, searches: int) -> Money:
    with localcontext(EXACT):
        return _charged_ceiling(searches * (price.web_search or Decimal(0)) / THOUSAND, markup)


def hold_for(price: Price | None, markup: Decimal, input_tokens: int, max_tokens: int,
             policy: HoldPolicy = DEFAULT_POLICY) -> Money:
    """The amount to `admit` a request with (0 for a model without a price: nothing to hold)."""
    if price is None:
        return 0
    allowance = min(max(max_tokens, 0), policy.output_allowance)
    return input_part(price, markup, input_tokens, policy) + output_cost(price, markup, allowance)


def minimum_for(price: Price | None, markup: Decimal, input_tokens: int, policy: HoldPolicy = DEFAULT_POLICY) -> Money:
    """The least a request may be admitted with when the key has less than `hold_for` left (`admit(minimum=…)`):
    its whole input part and `margin` output tokens, so that its input — spent as soon as it is sent — is always
    covered."""
    if price is None:
        return 0
    return input_part(price, markup, input_tokens, policy) + output_cost(price, markup, policy.margin)


class OutputMeter:
    """Keeps one request's hold ahead of its answer. Call `grow(output_tokens)` with the output so far (counted
    from the stream's deltas) before forwarding each chunk; False means stop: the key cannot pay for more."""

    def __init__(self, ledger: Ledger, hold: Hold, price: Price, markup: Decimal, input_tokens: int,
                 policy: HoldPolicy = DEFAULT_POLICY) -> None:
        self.ledger = ledger
        self.hold = hold
        self.price = price
        self.markup = markup
        self.policy = policy
        self._input = input_part(price, markup, input_tokens, policy)
        self.refused: Refusal | None = None

    def covered(self) -> int:
        """How many output tokens the hold pays for, beyond the input."""
        left = self.hold.amount - self._input
        per_token = Decimal(self.price.output) / MILLION * (1 + self.markup / HUNDRED) * 1_000_000_000
        if per_token <= 0:
            return 1 << 62
        return max(int(Decimal(left) / per_token), 0)

    async def grow(self, output_tokens: int) -> bool:
        if self.refused is not None:
            return output_tokens <= self.covered()
        while self.covered() - output_tokens < self.policy.margin:
            try:
                self.hold = await self.ledger.extend(self.hold, output_cost(self.price, self.markup,
                                                                            self.policy.step))
            except Refusal as refusal:
                self.refused = refusal
                return output_tokens <= self.covered()
        return True
