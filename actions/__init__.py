"""Actions change the world (captures today; mirror, prune, drill, scale later), always guarded."""
