// Drive Evolink's own published client (npm @evolinkai/evolink-media) against the simulator.
//
//   EVOLINK_MEDIA_ROOT=<dir holding node_modules/@evolinkai/evolink-media> \
//   SIM_BASE_URL=http://127.0.0.1:PORT EVOLINK_API_KEY=sk-... \
//   node tests/evolink_client_check.mjs EXAMPLES.json
//
// EXAMPLES.json maps a model name to the body of its documented request. For each one this
// submits the body with the client's `apiRequest` (POST /v1/images/generations), polls with its
// `queryTask` (GET /v1/tasks/{id}) until the task is terminal, and renders the answer with the
// client's own `formatTaskResult` (which reads `results` and `result_data`). The client's base
// URL comes from the config object its functions take (`{baseUrl}`): the package only offers
// the `official` and `beta` channels through `createConfig`, so the simulator's URL is passed
// in a config of the same shape. One JSON line per model goes to stdout; the exit code is 0
// only when every task completed with results that the client rendered.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = process.env.EVOLINK_MEDIA_ROOT;
const baseUrl = process.env.SIM_BASE_URL;
const examplesPath = process.argv[2];
if (!root || !baseUrl || !examplesPath || !process.env.EVOLINK_API_KEY) {
  console.error('usage: EVOLINK_MEDIA_ROOT=... SIM_BASE_URL=... EVOLINK_API_KEY=... node evolink_client_check.mjs EXAMPLES.json');
  process.exit(2);
}
const pollMs = Number(process.env.POLL_MS ?? '100');
const timeoutMs = Number(process.env.TASK_TIMEOUT_MS ?? '30000');

const dist = join(root, 'node_modules', '@evolinkai', 'evolink-media', 'dist', 'core', 'src');
const load = (relative) => import(pathToFileURL(join(dist, relative)).href);
const { apiRequest, queryTask } = await load('services/api-client.js');
const { formatTaskResult } = await load('tools/check-task.js');
const packageJson = JSON.parse(
  readFileSync(join(root, 'node_modules', '@evolinkai', 'evolink-media', 'package.json'), 'utf8'),
);

const config = { channel: 'simulator', baseUrl };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function run(model, body) {
  const outcome = { model, client_version: packageJson.version };
  try {
    const task = await apiRequest(config, {
      method: 'POST',
      path: '/v1/images/generations',
      body,
    });
    outcome.id = task.id;
    outcome.submitted_status = task.status;
    outcome.credits_reserved = task.usage?.credits_reserved ?? null;
    const deadline = Date.now() + timeoutMs;
    let current = task;
    while (!['completed', 'failed', 'cancelled'].includes(current.status)) {
      if (Date.now() > deadline) throw new Error(`task ${task.id} not terminal in ${timeoutMs} ms`);
      await sleep(pollMs);
      current = await queryTask(config, task.id);
    }
    const text = formatTaskResult(current);
    outcome.status = current.status;
    outcome.answer_model = current.model;
    outcome.results = current.results ?? [];
    outcome.result_data = current.result_data ?? [];
    outcome.rendered_images = (text.match(/^ {2}Image: /gm) ?? []).length;
    outcome.rendered_results = (text.match(/^ {2}\[\d+\] /gm) ?? []).length;
    outcome.ok = current.status === 'completed'
      && outcome.results.length > 0
      && outcome.rendered_images === outcome.result_data.length
      && outcome.rendered_results === outcome.results.length;
  } catch (error) {
    outcome.ok = false;
    outcome.error = `${error?.name ?? 'Error'}: ${error?.message ?? error}`;
  }
  return outcome;
}

const examples = JSON.parse(readFileSync(examplesPath, 'utf8'));
let failures = 0;
for (const [model, body] of Object.entries(examples)) {
  const outcome = await run(model, body);
  if (!outcome.ok) failures += 1;
  console.log(JSON.stringify(outcome));
}
process.exit(failures === 0 ? 0 : 1);
