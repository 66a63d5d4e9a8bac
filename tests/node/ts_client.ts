// A TypeScript client of llama.v1 built from stubs that `buf generate` writes with
// protos/buf.gen.yaml (protobuf-es messages, Connect's gRPC transport for Node), run by
// tests/test_ts_client.py. It asks GetServerInfo, then streams a greedy Completion under its
// own request id, and prints each answer as a JSON line (protobuf-es' JSON: proto3 JSON names).
//
// Usage: node dist/ts_client.js <host:port> <prompt> <n_predict> <request id>
// (compiled by tsc next to a gen/ folder of generated stubs).

import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { toJson } from "@bufbuild/protobuf";
import { CompletionChunkSchema } from "./gen/llama/v1/completion_pb.js";
import { GetServerInfoResponseSchema } from "./gen/llama/v1/server_info_pb.js";
import { LlamaServer } from "./gen/llama/v1/service_pb.js";

const [target, prompt, nPredict, requestId] = process.argv.slice(2);
const client = createClient(LlamaServer, createGrpcTransport({ baseUrl: `http://${target}` }));
const print = (line: object) => console.log(JSON.stringify(line));
const opts = { useProtoFieldName: true };

const info = await client.getServerInfo({});
print({ server_info: toJson(GetServerInfoResponseSchema, info, opts) });

const chunks = client.completion(
  {
    promptInput: { case: "prompt", value: { kind: { case: "stringValue", value: prompt } } },
    nPredict: Number(nPredict),
    temperature: 0,
    stream: true,
    requestId,
  },
  { timeoutMs: 60_000, onHeader: (headers) => print({ request_id: headers.get("x-request-id") }) },
);
for await (const chunk of chunks) {
  print({ message: toJson(CompletionChunkSchema, chunk, opts) });
}
