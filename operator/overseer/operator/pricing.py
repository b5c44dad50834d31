"""Condition PriceKnown of an Agent: whether the model gateway can price its model's calls.

The operator reads the same price table as the gateway (the ConfigMap overseer-gateway-prices
mounted as OVERSEER_GATEWAY_PRICES_FILE, over the built-in list prices). A model without a price is
recorded at $0 in the spend ledger and any money budget refuses its calls, so the Agent says so.
"""

from __future__ import annotations

from overseer.api import Agent
from overseer.prices import PriceTable


def price_condition(agent: Agent, prices: PriceTable) -> tuple[bool, str, str]:
    """(status, reason, message) of PriceKnown for an Agent whose calls go through the gateway."""
    model = agent.spec.model.name
    price = prices.price(model)
    if price is None:
        return False, "NoPrice", (
            f"Agent {agent.namespace}/{agent.name}: spec.model.name {model!r} has no price in the model gateway's "
            f"price table, so its calls cost $0 in the spend ledger and a money budget (maxCostPerGoal, "
            f"maxCostPerDay) refuses them; add the key {model!r} to ConfigMap overseer-gateway-prices "
            f"(Helm value gateway.prices), e.g. {model}: {{input: 3, output: 15}} in US dollars per million tokens")
    return True, "PriceListed", (f"{model} costs ${price.input:g} input and ${price.output:g} output per million "
                                 "tokens")
