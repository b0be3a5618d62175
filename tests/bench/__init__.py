"""Benchmarks of the worker against the local stack (``make bench``); not collected by pytest.

Every number is reported next to a baseline measured in the same run (a raw aiokafka
consumer), so a slow machine moves both and the ratio stays meaningful; targets are
checked and printed, never asserted.
"""
