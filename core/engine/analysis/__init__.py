"""Analysis: embedding maps and clusters, nearest neighbours, band and crop studies, the
few-shot study and their figures.
"""
