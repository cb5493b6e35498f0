"""Sweep results as cells: statistics over seeds, published numbers beside them."""
