"""Client keys' budgets, rate windows and alerts.

``budgets`` is the pure arithmetic (windows, limits, refusals, thresholds); ``tracker`` keeps the
spend in memory, admits or refuses requests and records what they cost; ``alerts`` announces
thresholds in the log and to a webhook.
"""
