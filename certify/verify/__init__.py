"""Complete verification: alpha-CROWN (optimised slopes), beta-CROWN branch and bound over ReLU
splits (input splits for low-dimensional inputs), and falsification by attack and by the bounds'
own minimisers. Three outcomes per input: verified, falsified (with a counterexample), unknown.

    alpha.py      slopes and split multipliers optimised unsoundly, the final bound sound
    branching.py  which ReLU (or input dimension) a domain splits next
    bab.py        the search: domains, queue, memory cap, deadline
    property_check.py
                  VNN-LIB properties (linear output constraints over input boxes): attack, sound
                  bounds, input branch and bound; `check_property` (certify vnnlib)
"""

from certify.verify.bab import Decision, SearchSettings, decide_one

__all__ = ["Decision", "SearchSettings", "decide_one"]
