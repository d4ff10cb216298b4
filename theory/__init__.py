"""Exact theoretical results and checkable claims for the toymodels testbed."""
