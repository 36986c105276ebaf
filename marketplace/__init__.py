"""The simulated marketplace and the demo: shoppers with known behaviour, driven through every app's real services."""
