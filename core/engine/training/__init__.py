"""Training: `dispatch.train` (one run, a seed ensemble or recursive pseudo-labelling;
the DeepSpeed path when launched), the single run's set-up, unfreezing stages, optimizer
groups and the loop parts both trainers share.
"""
