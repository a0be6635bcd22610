"""The rule table: threshold, rate, window and staleness rules indexed by series id.

See `_rules_py` (the specification) for the API and the semantics.
"""
from . import load

_impl, IMPLEMENTATION = load("rules")
RuleTable = _impl.RuleTable
MODE_ALL, MODE_ANY, MODE_STALE, MODE_MIRROR = _impl.MODE_ALL, _impl.MODE_ANY, _impl.MODE_STALE, _impl.MODE_MIRROR
SIGNAL_VALUE, SIGNAL_RATE, SIGNAL_WINDOW = _impl.SIGNAL_VALUE, _impl.SIGNAL_RATE, _impl.SIGNAL_WINDOW
STATS = _impl.STATS
MAX_SID = _impl.MAX_SID
CLEARED, RAISED, READING = _impl.CLEARED, _impl.RAISED, _impl.READING
__all__ = ["RuleTable", "MODE_ALL", "MODE_ANY", "MODE_STALE", "MODE_MIRROR", "SIGNAL_VALUE", "SIGNAL_RATE",
           "SIGNAL_WINDOW", "STATS", "MAX_SID", "CLEARED", "RAISED", "READING", "IMPLEMENTATION"]
