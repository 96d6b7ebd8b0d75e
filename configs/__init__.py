"""Reusable config pieces (hardware profiles), installed as cann_distill.configs."""
