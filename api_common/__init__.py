"""What the gRPC service (`service/`) and the REST bridge (`rest_bridge/`) share, so that the
bridge can be installed and run where the service is not: the error kinds with their gRPC and
HTTP faces and the ErrorInfo reasons (`api_common.errors`), the google.rpc status details
encoding (`api_common.rich_status`) and the constant-time API-key comparison
(`api_common.auth`).

It imports neither `service`, `native` nor `rest_bridge` (tests/test_layering.py checks it)."""
