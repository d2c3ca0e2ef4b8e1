"""Reward functions for examples/grpo/numbers.yaml (called as function(prompt, completion, **fields))."""

import re


def cites_a_number(prompt, completion, **fields):
    """1.0 when the reply quotes a number (a price, a duration, a part number), else 0.0."""
    return 1.0 if re.search(r"\d", completion) else 0.0


def names_the_product(prompt, completion, product, **fields):
    """0.5 when the reply names the product of the example's ``product`` field."""
    return 0.5 if product.lower() in completion.lower() else 0.0
