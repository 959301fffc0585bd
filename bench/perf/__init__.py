"""Performance measurement engines: the throughput benchmark of an exported model (beside a
PaddleClas-style baseline), its JSON schema, markdown and plots, and the HTTP load generator.

Modules are imported directly (``from bench.perf.throughput import run_throughput``); this
package imports nothing, so a light user such as the search objective's
:mod:`bench.perf.quick` does not pay for the report code.
"""
