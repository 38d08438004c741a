"""``sluice replay``: re-decide a time range of the request log under a candidate configuration (dry run), or
re-run it for real into a shadow namespace (``--execute``). See the README, "Replay and the decision trail"."""
