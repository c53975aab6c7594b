"""Scale-out: launch options and process groups, the DeepSpeed config and global-batch
schedule, collectives, the DeepSpeed trainer and per-rank `train`, launch planning.
"""
