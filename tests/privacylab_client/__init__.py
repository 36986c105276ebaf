"""Tests of the Django-free client package."""
