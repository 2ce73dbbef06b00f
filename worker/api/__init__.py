"""The CallPassword API client: HTTP, retries, errors, and the limits and breaker around it."""
