"""``steadyq dashboard``: the store live in a browser, and ``/metrics``.

Needs the ``dashboard`` extra (starlette, uvicorn, prometheus-client); nothing in
the core imports this package, so steadyq works without it.
"""
