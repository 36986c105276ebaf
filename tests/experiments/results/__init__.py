"""Tests of experiments.results, one module per results module."""
