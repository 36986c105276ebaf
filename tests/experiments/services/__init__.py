"""Tests of experiments.services, one module per service module."""
