"""Temporal activities: every file read, provider call and Redis write."""
