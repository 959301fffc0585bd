"""The HTTP inference server behind ``bench serve``: upload checks, the dynamic batcher, the
FastAPI application and the socket/uvicorn glue.

Modules are imported directly (``from bench.serve.app import create_app``); FastAPI and uvicorn
are imported only where an application is built or run.
"""
