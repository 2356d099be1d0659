"""Suites, grids of RunSpecs, and executing them."""
