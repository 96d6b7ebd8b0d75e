"""Shareable example recipes, installed as cann_distill.recipes."""
