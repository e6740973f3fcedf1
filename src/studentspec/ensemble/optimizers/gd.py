"""Full-batch gradient descent: SGD's update rule; the data stream feeds the whole training set every step."""

from __future__ import annotations

from . import OptimizerRule, register
from .sgd import SGD

register(
    OptimizerRule(
        "gd",
        SGD,
        "full-batch gradient descent: SGD's rule on the whole training set (momentum, weight decay apply)",
        full_batch=True,
        plain_sgd=True,
    )
)
