"""The daemon's garbage-collection rhythm: the heap frozen after each publish, collected whole when chosen."""

from __future__ import annotations

import gc
import weakref

from daemon.core.snapshot import StateHolder
from daemon.heap import collect_frozen, freeze_after_publish


class _Node:
    me: _Node | None = None


def test_a_publish_freezes_the_heap_and_the_chosen_full_collection_frees_frozen_cycles() -> None:
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection may take the cycle before the publish freezes it
    try:
        holder = StateHolder()
        freeze_after_publish(holder)
        node = _Node()
        node.me = node  # a reference cycle: only the cyclic collector can free it
        ref = weakref.ref(node)
        del node
        before = gc.get_freeze_count()
        holder.update(lambda s: s)
        assert gc.get_freeze_count() > before  # the publish froze the heap, the cycle with it
        gc.collect()
        assert ref() is not None  # an ordinary full collection does not walk frozen objects
        collect_frozen()
        assert ref() is None  # the chosen one does, and frees the cycle
        assert gc.get_freeze_count() > 0  # and freezes what survived
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
