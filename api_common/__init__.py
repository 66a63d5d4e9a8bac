"""What the gRPC service (`service/`) and the REST bridge (`rest_bridge/`) share, so that the
bridge can be installed and run where the service is not: the error kinds with their gRPC and
HTTP faces (`api_common.errors`) and the constant-time API-key comparison (`api_common.auth`).

It imports neither `service`, `native` nor `rest_bridge` (tests/test_layering.py checks it)."""
