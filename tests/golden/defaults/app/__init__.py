"""Example service rendered by deployment-patterns."""
