"""Tests of the long task manager, against real servers."""
