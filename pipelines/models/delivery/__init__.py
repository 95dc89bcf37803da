"""Delivery time (regression example model)."""
