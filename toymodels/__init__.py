"""Toy data-generating processes, small transformers and exact divergences."""
