"""Taxi-tip model: will a trip end with a tip? A tabular binary classifier."""
