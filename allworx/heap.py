# -*- test-case-name: allworx.tests.core.test_heap -*-
"""
The garbage collector tuned for a long-running server, once the server is
up (`settle_heap`, scheduled by the twistd plugin when the reactor runs).

CPython collects its youngest generation every 700 allocations: a few SIP
messages. Every transaction still waiting for its answer then survives two
collections and lands in the oldest generation, whose full collections walk
the whole heap (a fifth of the server's time under SIPp's load, measured
with py-spy --native). At GC_YOUNG allocations what one message makes is
gone before the next collection. What exists once the server is up
(modules, configuration, listeners) lives as long as the process: it is
frozen out of every later collection.
"""

import gc

GC_YOUNG = 20000


def settle_heap(collector=gc):
    """
    Freeze what exists now out of later collections and collect the young
    generation every GC_YOUNG allocations. Once a process: a second call
    changes nothing. Returns whether this call did it.
    """
    if getattr(collector, "_allworx_settled", False):
        return False
    collector._allworx_settled = True
    collector.freeze()
    young, middle, old = collector.get_threshold()
    if young and young < GC_YOUNG:
        collector.set_threshold(GC_YOUNG, middle, old)
    return True
