"""The local backend, managed: the gateway runs llama.cpp's server itself.

Its face is :class:`gateway.local.backend.LocalBackend` (the folder of models, the supervised
server, the chain's ``local`` provider, warm-up). Beside it: ``gguf`` (a GGUF header, read without
loading the model), ``models`` (the folder and what can load), ``supervisor`` (the child
processes: start, readiness, restart with backoff, switch with drain), ``flags``
(``LOCAL_SERVER_ARGS``) and ``child`` (the process itself). Nothing is imported here, so the child
process (``python -m gateway.local.child``) starts without the gateway's web stack.
"""
