// A Node.js client of the llama.v1 gRPC API (@grpc/grpc-js + @grpc/proto-loader, protobufjs for
// the error details), run by tests/test_grpc_node.py. It prints JSON lines: {"metadata"} (the
// initial metadata, e.g. x-request-id), one {"message"} per response message, {"cancel"} (the
// Cancel RPC's answer) and last {"status"} with the code, details and the decoded
// google.rpc.Status details of the grpc-status-details-bin trailer.
//
// Usage: node completion_client.js <host:port> '<request JSON>' <include dir>... with the
// environment variable CLIENT_MODE one of
//   completion   (default) stream Completion with the request;
//   chat         stream ChatCompletion with the request;
//   server-info  call GetServerInfo (the request is ignored);
//   cancel       run Completion with the request (give it a request_id and stream = false) and,
//                as soon as the initial metadata names the id, call Cancel with that id.
// The include dirs hold protos/ (llama/v1/*.proto), the well-known types and googleapis'
// google/api and google/rpc protos; the test finds the last two in the Python packages that
// ship them. The request JSON uses the proto field names (keepCase), except inside
// google.protobuf types, which protobufjs defines itself with camelCase names whatever keepCase
// says, e.g. {"prompt": {"stringValue": "Hello"}, "n_predict": 8, "stream": true}
// (a {"string_value": ...} Value is silently sent empty).

import fs from "node:fs";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const [target, requestJson, ...includeDirs] = process.argv.slice(2);
if (!target || !requestJson || includeDirs.length === 0) {
  console.error("usage: node completion_client.js <host:port> <request JSON> <include dir>...");
  process.exit(2);
}
const mode = process.env.CLIENT_MODE || "completion";
const print = (line) => console.log(JSON.stringify(line));

const definition = protoLoader.loadSync("llama/v1/service.proto", {
  includeDirs,
  keepCase: true, // llama-server's JSON names are the proto field names
  longs: Number,
  enums: String,
  defaults: false,
  oneofs: true,
});
const { llama } = grpc.loadPackageDefinition(definition);
const client = new llama.v1.LlamaServer(target, grpc.credentials.createInsecure());

// google.rpc.Status and its detail messages, to read the grpc-status-details-bin trailer.
const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (origin, file) => {
  const found = includeDirs.map((dir) => path.join(dir, file)).find((p) => fs.existsSync(p));
  return found || file;
};
rpcTypes.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"],
  { keepCase: true });
const RpcStatus = rpcTypes.lookupType("google.rpc.Status");

function decodeDetails(trailers) {
  const raw = trailers ? trailers.get("grpc-status-details-bin") : [];
  if (!raw || raw.length === 0) return null;
  const status = RpcStatus.decode(raw[0]);
  return status.details.map((any) => {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
    const type = rpcTypes.lookupType(typeName);
    return { "@type": typeName, ...type.toObject(type.decode(any.value), { longs: Number }) };
  });
}

function metadataFor() {
  const metadata = new grpc.Metadata();
  if (process.env.LLAMA_API_KEY) {
    metadata.set("authorization", `Bearer ${process.env.LLAMA_API_KEY}`);
  }
  return metadata;
}

const options = () => ({ deadline: new Date(Date.now() + 60_000) });

function printStatus(status) {
  print({ status: { code: status.code, details: status.details,
                    error_details: decodeDetails(status.metadata) } });
}

function stream(rpc, request, onMetadata) {
  const call = client[rpc](request, metadataFor(), options());
  call.on("metadata", (md) => {
    const headers = md.getMap();
    print({ metadata: headers });
    if (onMetadata) onMetadata(headers);
  });
  call.on("data", (message) => print({ message }));
  call.on("error", () => {}); // the status event below reports it
  call.on("status", (status) => {
    printStatus(status);
    client.close();
  });
}

function cancelWhenNamed(headers) {
  client.Cancel({ id: headers["x-request-id"] }, metadataFor(), options(), (err, resp) => {
    print({ cancel: err ? { error: err.code, details: err.details } : resp });
  });
}

const request = JSON.parse(requestJson);
if (mode === "completion") {
  stream("Completion", request);
} else if (mode === "chat") {
  stream("ChatCompletion", request);
} else if (mode === "cancel") {
  stream("Completion", request, cancelWhenNamed);
} else if (mode === "server-info") {
  client.GetServerInfo({}, metadataFor(), options(), (err, resp) => {
    if (resp) print({ message: resp });
    printStatus(err ? { code: err.code, details: err.details, metadata: err.metadata }
      : { code: grpc.status.OK, details: "", metadata: null });
    client.close();
  });
} else {
  console.error(`unknown CLIENT_MODE ${mode}`);
  process.exit(2);
}
