// Preloaded (node --import) by tests/examples/test_quickstarts.py: a webhook receiver checks
// webhook-timestamp against its own clock, and the platform a pinned test run starts
// (`make test AT=…`) signs with the pinned one, SWITCHBOARD_CLOCK_OFFSET_SECONDS away from the
// machine's. This gives standardwebhooks' timestamp check the platform's clock, as a receiver
// on the same clock as its sender has; the example itself stays as a user would write it.
import { createRequire } from "node:module";

const require = createRequire(new URL("../../examples/node/package.json", import.meta.url));
const { Webhook } = require("standardwebhooks");
const offsetMs = Number(process.env.SWITCHBOARD_CLOCK_OFFSET_SECONDS || 0) * 1000;

if (offsetMs) {
  const verifyTimestamp = Webhook.prototype.verifyTimestamp;
  Webhook.prototype.verifyTimestamp = function (header) {
    const machineNow = Date.now;
    Date.now = () => machineNow() + offsetMs;
    try {
      return verifyTimestamp.call(this, header);
    } finally {
      Date.now = machineNow;
    }
  };
}
