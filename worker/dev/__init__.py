"""The local development stack (``make run``): processes, the runner and the demo batch.

Production code never imports this package."""
