"""Fake ConductorOne tenant for tests, the demo and the benchmark (see `server`)."""

from connector.sandbox.tenant.server import (
    FinishRecord,
    HelloRecord,
    Tenant,
    TenantHandle,
    TokenRequestRecord,
    UploadRecord,
    main,
    new_task_id,
    start_tenant,
    unpack_any,
)

__all__ = [
    "FinishRecord",
    "HelloRecord",
    "Tenant",
    "TenantHandle",
    "TokenRequestRecord",
    "UploadRecord",
    "main",
    "new_task_id",
    "start_tenant",
    "unpack_any",
]
