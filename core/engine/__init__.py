"""The training engine: datasets from stores, models, training, evaluation, prediction."""
