"""Evaluation: the Market-1501 ranking protocol, re-ranking and feature extraction."""
