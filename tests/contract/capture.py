"""Keep what a real hook puts on the wire: the contract tests check those bytes, not our own model of them."""

from __future__ import annotations


def capture_sent(session) -> list:
    """Wrap ``session.send`` so every prepared request (method, URL, headers, exact body) is kept, in order,
    in the returned list; the request still goes to the server."""
    sent: list = []
    real_send = session.send

    def send(prepared, **kwargs):
        sent.append(prepared)
        return real_send(prepared, **kwargs)

    session.send = send
    return sent
