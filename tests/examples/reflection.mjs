// Server reflection as a grpc-js reflection client sees it: `grpc.reflection.v1` first (what
// current clients ask for), then `v1alpha`. Lists the services and resolves one symbol to its
// file. Run by tests/examples/test_quickstarts.py with examples/node's packages:
//   node tests/examples/reflection.mjs <host:port>
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "..", "examples", "node", "package.json"));
const grpc = require("@grpc/grpc-js");
const protobuf = require("protobufjs");

// The parts of reflection.proto (identical in v1 and v1alpha) and descriptor.proto this reads.
const { root } = protobuf.parse(`
syntax = "proto3";
message ServerReflectionRequest {
  string host = 1;
  oneof message_request { string file_containing_symbol = 4; string list_services = 7; }
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
message FileDescriptorProto { string name = 1; string package = 2; }
`, { keepCase: true });
const Request = root.lookupType("ServerReflectionRequest");
const Response = root.lookupType("ServerReflectionResponse");
const FileDescriptorProto = root.lookupType("FileDescriptorProto");

function ask(client, version, request) {
  return new Promise((resolve, reject) => {
    const call = client.makeBidiStreamRequest(
      `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
      (message) => Buffer.from(Request.encode(Request.create(message)).finish()),
      (bytes) => Response.toObject(Response.decode(bytes), { oneofs: true, defaults: true }),
      new grpc.Metadata(),
      { deadline: new Date(Date.now() + 10000) },
    );
    call.on("data", (response) => {
      resolve(response);
      call.cancel();
    });
    call.on("error", (error) => {
      if (error.code !== grpc.status.CANCELLED) reject(error);
    });
    call.write(request);
    call.end();
  });
}

const client = new grpc.Client(process.argv[2], grpc.credentials.createInsecure());
for (const version of ["v1", "v1alpha"]) {
  const listed = await ask(client, version, { list_services: "" });
  const names = listed.list_services_response.service.map((s) => s.name);
  console.log(`reflection ${version}: ${names.join(" ")}`);
  const found = await ask(client, version, { file_containing_symbol: "switchboard.sms.v1.SmsService" });
  const files = found.file_descriptor_response.file_descriptor_proto.map(
    (bytes) => FileDescriptorProto.decode(bytes).name,
  );
  console.log(`reflection ${version}: switchboard.sms.v1.SmsService in ${files.join(" ")}`);
}
client.close();
