"""Active learning: choosing objects to label, the label page, and head-only retraining."""
