"""The lowest layer of tlbench: error types, YAML reading, machine facts and argument checks,
shared by bench, search, harness and kernels.

It imports nothing from the other packages, so any of them may import it.
"""
