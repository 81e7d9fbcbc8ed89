"""Route handlers, one module per route family."""
