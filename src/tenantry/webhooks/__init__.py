"""Webhooks: endpoints, event catalog, signing, delivery, retries, replay."""
