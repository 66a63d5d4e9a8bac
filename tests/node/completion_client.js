// A Node.js client of the llama.v1 gRPC API (@grpc/grpc-js + @grpc/proto-loader): streams one
// Completion and prints every message as a JSON line, then a last line with the call's status.
//
// Usage: node completion_client.js <host:port> '<CompletionRequest JSON>' <include dir>...
// The include dirs hold protos/ (llama/v1/*.proto), the well-known types and googleapis'
// google/api/*.proto; the test finds the last two in the Python packages that ship them.
// The request JSON uses the proto field names (keepCase), except inside google.protobuf types,
// which protobufjs defines itself with camelCase names whatever keepCase says, e.g.
//   {"prompt": {"stringValue": "Hello"}, "n_predict": 8, "stream": true}
// (a {"string_value": ...} Value is silently sent empty).

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const [target, requestJson, ...includeDirs] = process.argv.slice(2);
if (!target || !requestJson || includeDirs.length === 0) {
  console.error("usage: node completion_client.js <host:port> <request JSON> <include dir>...");
  process.exit(2);
}

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

const metadata = new grpc.Metadata();
if (process.env.LLAMA_API_KEY) {
  metadata.set("authorization", `Bearer ${process.env.LLAMA_API_KEY}`);
}
const deadline = new Date(Date.now() + 60_000);
const call = client.Completion(JSON.parse(requestJson), metadata, { deadline });

call.on("data", (message) => console.log(JSON.stringify({ message })));
call.on("error", () => {}); // the status event below reports it
call.on("status", (status) => {
  console.log(JSON.stringify({ status: { code: status.code, details: status.details } }));
  client.close();
});
