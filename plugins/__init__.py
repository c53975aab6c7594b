"""Built-in extensions: backbones, adaptation methods and trainers.

They register through the same hooks as third-party plugins (see astrotransfer.hookspecs).
"""
