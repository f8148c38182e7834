"""Collectors read the world (archives, live databases) and report facts; they never act."""
