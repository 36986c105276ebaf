"""Management commands of the consent app."""
