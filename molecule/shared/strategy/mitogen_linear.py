# Mitogen's linear strategy, found here so that ANSIBLE_STRATEGY_PLUGINS can
# name a folder of this repository instead of one inside the virtualenv
# (whose path depends on the Python version). Requires the `mitogen` package.
from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule

__all__ = ["StrategyModule"]
