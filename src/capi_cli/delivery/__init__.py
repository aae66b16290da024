"""Sending to Meta: `graph` (the HTTP client and the classification of Meta's answers), `engine`
(batching, concurrency, retries, isolation of refused events, ledger states), `types` (what the
engine takes and gives: options, the run summary, progress) and `run` (one `capi send` run)."""
