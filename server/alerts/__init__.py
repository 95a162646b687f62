"""Alert e-mails: decisions and outbox, SMTP, subscriptions."""
