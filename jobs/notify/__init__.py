"""Notifications that leave the process: webhooks for budget alerts and job outcomes."""
