"""List requests' filters, read off the request message, and the list response helper."""

from __future__ import annotations

import pytest
from switchboard.calling.v1 import calling_service_pb2
from switchboard.messaging.v1 import messaging_service_pb2
from switchboard.templates.v1 import templates_service_pb2

from switchboard.server.core import context, protomap

pytestmark = pytest.mark.unit


def test_filters_are_the_optional_scalars_but_paging() -> None:
    names = protomap.filter_names(calling_service_pb2.ListBridgeCallsRequest.DESCRIPTOR)
    assert names == ("id", "state")  # not bridge_id (a path parameter), limit, offset, page_token


def test_given_filters_are_those_set_even_to_empty_and_not_the_excluded() -> None:
    request = templates_service_pb2.ListBetaTemplatesRequest(
        org="o", type="", channel="EMAIL", change_type="CREATE", limit=5
    )
    assert protomap.given_filters(request) == {
        "type": "",
        "channel": "EMAIL",
        "change_type": "CREATE",
    }
    assert protomap.given_filters(request, exclude=("change_type",)) == {
        "type": "",
        "channel": "EMAIL",
    }


def test_page_response_lists_the_items_and_asks_for_a_bare_list() -> None:
    context.take_response_headers()
    response = protomap.page_response(
        messaging_service_pb2.ListKeywordsResponse,
        "keywords",
        [{"id": "kw_1", "name": "STOP"}],
        "next",
    )
    assert [k.id for k in response.keywords] == ["kw_1"]
    assert response.next_page_token == "next"
    assert context.take_response_headers() == {context.BARE_LIST_HEADER: "keywords"}
