"""Inference: load a trained run, stream a store through it (or in-memory arrays), write
catalogs and embeddings, observe features and probabilities of store rows.
"""
