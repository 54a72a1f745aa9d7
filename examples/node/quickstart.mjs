// Switchboard from Node.js: @grpc/grpc-js + @grpc/proto-loader against the repository's protos.
//
//   cd examples/node && npm ci
//   SWITCHBOARD_GRPC_ADDR=localhost:8080 SWITCHBOARD_TOKEN=$TOKEN node quickstart.mjs
//
// Steps (each a function the README quotes): send an SMS and follow it to DELIVERED on the SMS
// stream; place a call and follow it to its end on the calling stream; read the rich error details
// of a bad request; create an event handler and verify its signed webhook with `standardwebhooks`.
// Any failure exits non-zero.
import http from "node:http";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import { Webhook } from "standardwebhooks";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
// Both include paths: our contracts import google/api/*.proto and google/rpc/*.proto from the
// vendored googleapis copy; google/protobuf/*.proto come with protobufjs.
const INCLUDE_DIRS = [path.join(REPO, "proto"), path.join(REPO, "third_party", "googleapis")];
const ADDR = process.env.SWITCHBOARD_GRPC_ADDR ?? "localhost:8080"; // Envoy passes gRPC through
const TOKEN = process.env.SWITCHBOARD_TOKEN ?? "";
const STEP_TIMEOUT_MS = Number(process.env.SWITCHBOARD_STEP_TIMEOUT_MS ?? 30000);

// keepCase: fields keep their proto names (api_message_id, not apiMessageId and not the documented
// REST key). longs/enums as strings, defaults filled in, oneofs tell which member is set.
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

const definition = protoLoader.loadSync(
  [
    "switchboard/sms/v1/sms_service.proto",
    "switchboard/calling/v1/calling_service.proto",
    "switchboard/messaging/v1/messaging_service.proto",
  ],
  { ...LOADER_OPTIONS, includeDirs: INCLUDE_DIRS },
);
const api = grpc.loadPackageDefinition(definition).switchboard;

const credentials = grpc.credentials.createInsecure();
const sms = new api.sms.v1.SmsService(ADDR, credentials);
const calling = new api.calling.v1.CallingService(ADDR, credentials);
const messaging = new api.messaging.v1.MessagingService(ADDR, credentials);

function auth() {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${TOKEN}`);
  return metadata;
}

// Unary calls as promises, with a deadline.
function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + STEP_TIMEOUT_MS);
    client[method](request, auth(), { deadline }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

// Reads a server stream until `done(event)` is true; fails after the step timeout.
function follow(client, method, request, done) {
  return new Promise((resolve, reject) => {
    const stream = client[method](request, auth());
    const timer = setTimeout(() => {
      stream.cancel();
      reject(new Error(`${method}: nothing conclusive within ${STEP_TIMEOUT_MS} ms`));
    }, STEP_TIMEOUT_MS);
    const seen = [];
    stream.on("data", (event) => {
      if (event.envelope.type === "heartbeat") return;
      seen.push(event);
      if (done(event)) {
        clearTimeout(timer);
        stream.cancel();
        resolve(seen);
      }
    });
    stream.on("error", (error) => {
      clearTimeout(timer);
      if (error.code !== grpc.status.CANCELLED) reject(error);
    });
    stream.on("end", () => {
      clearTimeout(timer);
      reject(new Error(`${method}: the stream ended before the outcome`));
    });
  });
}

// A valid +1 415 number with a random middle; the sandbox carrier scripts outcomes by the last
// four digits (random when not given).
function usNumber(ending = String(Math.floor(Math.random() * 10000)).padStart(4, "0")) {
  return `+1415${200 + Math.floor(Math.random() * 800)}${ending}`;
}

// a. Send an SMS and follow its events until it is delivered.
export async function sendSmsAndFollow() {
  const reply = await unary(sms, "SendSms", {
    messages: [{ channel: "clickatell", to: "+27821234567", content: "Hello from Node.js" }],
  });
  const [message] = reply.clickatell_msg_response.messages;
  if (!message.accepted) throw new Error(`not accepted: ${message.error}`);
  const id = message.api_message_id;
  console.log(`sms: sent ${id}`);
  // after: "0" replays this message's events from the start of the log, so none is missed
  // between SendSms and the subscription.
  const events = await follow(
    sms,
    "StreamSmsEvents",
    { api_message_ids: [id], after: "0" },
    (event) => ["DELIVERED", "FAILED"].includes(event.message.status),
  );
  for (const event of events) {
    console.log(`sms: ${event.envelope.cursor} ${event.envelope.type} ${event.message.status}`);
  }
  const last = events.at(-1).message;
  if (last.status !== "DELIVERED") throw new Error(`sms ended ${last.status}: ${last.error}`);
  console.log(`sms: ${id} DELIVERED`);
  return id;
}

// b. Place a call on the sandbox carrier and follow it on the calling stream to its end.
export async function placeCallAndFollow() {
  // A voice-capable sender: a long code of a class whose delivery window is always open.
  const sender = await unary(messaging, "CreateSenderId", {
    body: { type_id: "sms-long-code", class_id: "alerts-na", address: usNumber() },
  });
  // Numbers ending 0500: the far end answers, then hangs up 2 s later.
  const created = await unary(calling, "CreateCall", {
    body: { from: sender.id, to: usNumber("0500"), external_id: "node-quickstart" },
  });
  console.log(`call: placed ${created.id}`);
  const events = await follow(
    calling,
    "StreamCallEvents",
    { call_ids: [created.id], after: "0" },
    (event) => event.resource === "call" && ["COMPLETED", "REJECTED"].includes(event.call.state),
  );
  const states = events.filter((e) => e.resource === "call").map((e) => e.call.state);
  console.log(`call: ${states.join(" -> ")}`);
  const ended = events.at(-1).call;
  if (ended.state !== "COMPLETED") throw new Error(`call ended ${ended.state}`);
  console.log(`call: ${created.id} COMPLETED after ${ended.chargeable_duration} s`);
  return created.id;
}

// c. Rich error details: google.rpc.Status in the `grpc-status-details-bin` trailer. proto-loader
// does not decode messages outside services, so protobufjs (what proto-loader is built on) loads
// the same files with the same options.
const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (_origin, target) => {
  for (const dir of INCLUDE_DIRS) {
    const candidate = path.join(dir, target);
    if (protobuf.util.fs.existsSync(candidate)) return candidate;
  }
  return target;
};
rpcTypes.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], {
  keepCase: true,
});
const Status = rpcTypes.lookupType("google.rpc.Status");

export function decodeStatusDetails(error) {
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!raw) return null;
  const status = Status.toObject(Status.decode(raw), LOADER_OPTIONS);
  status.details = status.details.map((any) => {
    const type = rpcTypes.lookupType(any.type_url.split("/").pop());
    return { "@type": type.fullName.slice(1), ...type.toObject(type.decode(any.value), LOADER_OPTIONS) };
  });
  return status;
}

export async function readErrorDetails() {
  try {
    await unary(sms, "SendSms", { messages: [{ channel: "clickatell" }] }); // no to, no content
  } catch (error) {
    console.log(`error: ${grpc.status[error.code]}: ${error.details}`);
    const status = decodeStatusDetails(error);
    if (!status) throw new Error("no grpc-status-details-bin on the error");
    let violations = 0;
    for (const detail of status.details) {
      if (detail["@type"] === "google.rpc.ErrorInfo") {
        console.log(`error: ErrorInfo reason=${detail.reason} domain=${detail.domain} ` +
          `metadata=${JSON.stringify(detail.metadata)}`);
      } else if (detail["@type"] === "google.rpc.BadRequest") {
        for (const v of detail.field_violations) {
          console.log(`error: field ${v.field}: ${v.description} (${v.reason})`);
          violations += 1;
        }
      }
    }
    if (!violations) throw new Error("expected BadRequest field violations");
    return status;
  }
  throw new Error("the bad request succeeded");
}

// d. Webhooks: an event handler POSTs signed events to a URL; verify them with standardwebhooks.
// A local receiver. It listens before the handler exists (its URL goes into the handler), and
// verifies with the secret CreateEventHandler returns: `secret()` is read per request.
function startReceiver(secret, onVerified) {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8"); // verify the raw body, never re-encoded JSON
      let event;
      try {
        // Checks webhook-signature (any of its space-separated v1 signatures) and that
        // webhook-timestamp is recent; accepts the whsec_ prefix of the secret.
        event = new Webhook(secret()).verify(body, req.headers);
      } catch (error) {
        console.log(`webhook: rejected ${req.headers["webhook-id"]}: ${error.message}`);
        res.writeHead(400).end();
        return;
      }
      res.writeHead(204).end(); // any 2xx is success; answer fast, work later
      onVerified(event, req.headers["webhook-id"], body);
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

export async function receiveVerifiedWebhook() {
  let secret = "";
  let messageId = null;
  let resolveEvent;
  const arrived = new Promise((resolve) => (resolveEvent = resolve));
  const server = await startReceiver(
    () => secret,
    (event, webhookId, body) => {
      console.log(`webhook: verified ${webhookId} ${event.type}`);
      // webhook-id is stable across retries: a real receiver dedupes on it.
      if (messageId && (event.resource_id === messageId || body.includes(messageId))) {
        resolveEvent(event);
      }
    },
  );
  const url = `http://127.0.0.1:${server.address().port}/switchboard-events`;
  try {
    // Family B creates take the writable fields as `body` (what REST clients POST).
    const handler = await unary(messaging, "CreateEventHandler", {
      body: { url, event_types: ["sms.delivered"], description: "Node.js quick start" },
    });
    secret = handler.secret; // shown only here (and on rotate): store it
    console.log(`webhook: event handler ${handler.id} -> ${url}`);
    const reply = await unary(sms, "SendSms", {
      messages: [{ channel: "clickatell", to: "+27821234568", content: "Webhook me" }],
    });
    messageId = reply.clickatell_msg_response.messages[0].api_message_id;
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("no verified webhook in time")), STEP_TIMEOUT_MS);
    });
    const event = await Promise.race([arrived, timeout]).finally(() => clearTimeout(timer));
    console.log(`webhook: ${event.type} for ${messageId} verified with standardwebhooks`);
    await unary(messaging, "DeleteEventHandler", { event_handler_id: handler.id });
    return event;
  } finally {
    server.close();
  }
}

async function main() {
  if (!TOKEN) throw new Error("set SWITCHBOARD_TOKEN (e.g. switchboard token create --org demo)");
  await sendSmsAndFollow();
  await placeCallAndFollow();
  await readErrorDetails();
  await receiveVerifiedWebhook();
  console.log("quickstart: OK");
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  main()
    .then(() => process.exit(0))
    .catch((error) => {
      console.error(`quickstart: FAILED: ${error.stack ?? error}`);
      process.exit(1);
    });
}
