"""The lowest layer of tlbench: error types and YAML reading, shared by bench, search and harness.

It imports nothing from the other packages, so any of them may import it.
"""
