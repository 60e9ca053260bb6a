"""Helpers for the fine-tuning course."""
