"""Benchmarks of Tenantry, each printed with its ratio to a baseline measured in the same run.

Run them with ``python -m bench`` (or ``make bench``); ``bench/README.md`` says what each one measures.
They print and write ``bench/results/<benchmark>.json``; they never fail on a time.
"""
