"""The recommender app: catalog, privacy-level strategies, model builds, precomputed lists, serving."""
