"""Shared models, policies and settings of the long task manager."""
