"""Flask-FlashSale benchmarks: ``python -m benchmarks <name> [--quick]``.

Benchmarks, not tests: they print tables and write
``benchmarks/results/<name>.json``; nothing here asserts a timing.
"""
