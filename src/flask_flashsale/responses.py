"""The order's 202 response, whose ``Location`` is a URI already.

werkzeug's :meth:`Response.get_wsgi_headers` turns every ``Location`` header
into a URI with :func:`werkzeug.urls.iri_to_uri`: ``urllib.parse`` splits,
quotes and joins it again. A ticket URL is new for every order, so none of
``urllib.parse``'s caches help, and that cost ~9 us per order in this
package's ``orderpath`` benchmark, about a third of the extension's own Python
on the order path. Nothing in werkzeug turns it off, hence this small
subclass: the ticket's ``Location`` is the blueprint's prefix, converted
once by ``iri_to_uri`` itself and kept (:class:`LocationPrefixes`), plus
``/orders/`` and a ticket id, whose characters (a checked sale id, ``~`` and a
URL-safe token) are all unreserved in a URI, so the result is the one
``iri_to_uri`` would give, and it is sent as is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response
from werkzeug.datastructures import Headers
from werkzeug.urls import iri_to_uri

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

#: A ticket id of every character class a ticket id can hold, to check a prefix with.
_SAMPLE_TICKET = "Sale-1_2.3~Tok_en-09az"


class TicketAccepted(Response):
    """The ``202 Accepted`` of an order, with its ticket's ``Location``.

    ``uri_location`` is that ``Location`` as a URI already: while the
    response's ``Location`` header still holds it, it is sent as is and
    werkzeug's conversion is skipped. If an ``after_request`` hook changed the
    header (or ``autocorrect_location_header`` is on), werkzeug converts it
    as it would in any response.
    """

    def __init__(self, body: str, headers: list[tuple[str, str]], uri_location: str) -> None:
        super().__init__(body, 202, headers)
        #: The ``Location`` to send as is (a URI already).
        self.uri_location = uri_location

    def get_wsgi_headers(self, environ: WSGIEnvironment) -> Headers:
        """werkzeug's headers for ``environ``; the ticket's ``Location`` as it is."""
        location = self.uri_location
        headers = self.headers
        if self.autocorrect_location_header or headers.get("Location") != location:
            return super().get_wsgi_headers(environ)
        del headers["Location"]
        try:
            sent = super().get_wsgi_headers(environ)
        finally:
            headers["Location"] = location
        sent["Location"] = location
        return sent


class LocationPrefixes:
    """``iri_to_uri`` of each ticket-URL prefix seen (``SCRIPT_NAME`` + the
    blueprint's prefix + ``/orders/``), computed once.

    :meth:`get` gives ``None`` for a prefix that a ticket id cannot simply be
    appended to (one whose conversion with a ticket id after it differs from
    its own conversion plus the ticket id, e.g. with a ``?`` in it): the
    caller then leaves the whole ``Location`` to werkzeug. At most
    ``limit`` prefixes are kept (a deployment has one or a few); past that the
    memory is cleared and filled again.
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._known: dict[str, str | None] = {}

    def get(self, prefix: str) -> str | None:
        """The URI form of ``prefix``, or ``None`` (see the class)."""
        try:
            return self._known[prefix]
        except KeyError:
            pass
        uri: str | None = iri_to_uri(prefix)
        if iri_to_uri(prefix + _SAMPLE_TICKET) != f"{uri}{_SAMPLE_TICKET}":
            uri = None
        if len(self._known) >= self.limit:
            self._known.clear()
        self._known[prefix] = uri
        return uri
