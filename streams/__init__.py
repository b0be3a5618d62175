"""The pure processing core of salesops.

Nothing here imports faust, aiokafka, kafka or redis: every rule is a plain function
or small class over plain data, testable with lists in and values out, and the same
code runs in the worker, in replay and in the benchmarks.
"""
