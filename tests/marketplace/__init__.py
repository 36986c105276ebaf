"""Tests of the marketplace app: the simulator, its ground truth and the demo."""
