"""The HTTP listener: the API (``api.py``), the contact form and status page (``form.py``), served by
uvicorn inside serve's event loop (``server.py``). Thin adapters onto ``intake/channel.py``."""
