"""Notifications: the outbox sender, its channels (Telegram, webhooks) and the Telegram remote."""
