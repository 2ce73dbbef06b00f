// A Node.js producer for callpass-worker with celery-node alone (no Celery, no Python):
//
//   npm ci && CALLPASS_REDIS_URL=redis://127.0.0.1:6379/0 node verify.mjs 79990001001 [timeout]
//
// Prints the pin as soon as the call rings ("PLACED <callid> <pin>"), then the outcome
// document, then the worker's check of that pin as if the user had typed it.
import { createClient } from "celery-node";

const url = process.env.CALLPASS_REDIS_URL ?? "redis://127.0.0.1:6379/0"; // broker = backend
const queue = process.env.CALLPASS_QUEUE ?? "callpass";
const [dn, timeout = "5"] = process.argv.slice(2);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// celery-node publishes to the queue its client was created with: one client per queue.
const starts = createClient(url, url, queue);
const codes = createClient(url, url, `${queue}.codes`);

// get() waits for SUCCESS only: read the result key ourselves to see PLACED first.
async function placedOrSettled(result, deadline) {
  for (;;) {
    const meta = await result.getTaskMeta(); // one GET of celery-task-meta-<task id>
    if (["PLACED", "SUCCESS", "FAILURE"].includes(meta?.status)) return meta;
    if (Date.now() > deadline) throw new Error("the call was not placed in time");
    await sleep(50);
  }
}

try {
  // The worker refuses anything but keyword arguments; timeout must be a JSON integer.
  const kwargs = { dn, timeout: Number.parseInt(timeout, 10) };
  const result = starts.createTask("callpass.start_call").applyAsync([], kwargs);
  const meta = await placedOrSettled(result, Date.now() + 30_000);
  if (meta.status === "PLACED") {
    console.log(`PLACED ${meta.result.callid} ${meta.result.pin}`);
  }
  const outcome = await result.get((kwargs.timeout + 60) * 1000);
  console.log(JSON.stringify(outcome));
  if (meta.status === "PLACED") {
    // A request that named no verification is one, under its request_id (here: the task id).
    const args = [meta.result.request_id, meta.result.pin];
    const check = await codes.createTask("callpass.verify_code").applyAsync(args).get(10_000);
    console.log(JSON.stringify(check));
  }
} finally {
  await Promise.all([starts.disconnect(), codes.disconnect()]);
}
