"""Margin, reconstruction, TPN cross-entropy and feature-matching losses."""
