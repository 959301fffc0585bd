"""Paddle side of tlbench: data, models, fine-tuning, export, predictor.

Importing this package does not import Paddle; the submodules that need it do.
"""
