"""Evaluation: metrics, temperature calibration, label-free scores (entropy, IM, MMD, DEV),
the evaluate command's metrics.json, reports and plots.
"""
