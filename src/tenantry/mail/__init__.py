"""The mail port: SMTP when ``TENANTRY_SMTP_URL`` is set, else a local mailbox under the data dir."""

from tenantry.mail.mailer import Mailer, Message, build_mailer

__all__ = ["Mailer", "Message", "build_mailer"]
