"""Penguin species (multi-class example model)."""
