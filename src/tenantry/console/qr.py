"""QR codes for authenticator apps, drawn on the server (segno, SVG): no script, no outside service."""

from __future__ import annotations

import segno


def data_uri(text: str) -> str:
    """An ``image/svg+xml`` data URL of ``text`` as a QR code (error correction M survives a smudge)."""
    return segno.make_qr(text, error="m").svg_data_uri(scale=5, border=3, dark="#0f172a", light="#ffffff")
