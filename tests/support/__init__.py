"""Helpers shared by the test modules: fixture paths, goldens and clips."""
