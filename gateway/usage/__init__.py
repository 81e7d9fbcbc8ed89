"""Usage accounting: what each chat request used and cost, written to a ledger off the event loop.

- ``prices``: the price table (defaults + ``PRICES_FILE``) and the cost arithmetic (pure);
- ``answer``: token counts read from upstream answers, and the text an estimate counts (pure);
- ``stream``: the per-stream tap that finds the usage chunk and strips it when unasked;
- ``estimate``: tiktoken estimates for answers that arrived without usage;
- ``ledger``: the first recorder (prices the request, queues its row) and the batched writer;
- ``stats``: time windows and grouped totals over the ledger, for ``GET /stats`` and the CLI.
"""
