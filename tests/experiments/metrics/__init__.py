"""Tests of experiments.metrics, one module per pipeline module."""
