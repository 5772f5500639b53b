"""Confluence Data Center has no account deprovisioning: every delete surface refuses it clearly, and the
connector advertises neither RESOURCE_DELETE nor actions."""

from __future__ import annotations

import grpc
import pytest

from connector.pb.c1.connector.v2 import action_pb2, connector_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.errors import ConnectorError
from connector.sdk.runtime import ConnectorRuntime
from tests.test_confluence_support import running

Cap = connector_pb2.Capability


async def test_every_delete_surface_refuses_and_nothing_advertises_it() -> None:
    async with running("9.2") as (sandbox, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        before = sandbox.app.stats.requests
        for call in (
            rt.delete_resource(
                resource_pb2.DeleteResourceRequest(resource_id=model.resource_id("user", "user00004"))
            ),
            rt.delete_resource_v2(
                resource_pb2.DeleteResourceV2Request(resource_id=model.resource_id("user", "user00004"))
            ),
        ):
            with pytest.raises(ConnectorError) as err:
                await call
            assert err.value.code == grpc.StatusCode.UNIMPLEMENTED
            assert "must be deprovisioned in Confluence" in err.value.message
        assert sandbox.app.stats.requests == before  # refused without asking Confluence
        caps = rt.capabilities()
        assert Cap.CAPABILITY_ACTIONS not in caps.connector_capabilities
        assert Cap.CAPABILITY_RESOURCE_DELETE not in caps.connector_capabilities
        listed = await rt.list_action_schemas(action_pb2.ListActionSchemasRequest())
        assert list(listed.schemas) == []
