import { parentPort, workerData } from 'node:worker_threads';
import { createPolicyEngineFrom } from './cedar-engine';
import { answer, type ThreadReply, type ThreadRequest } from './policy-threads';

/**
 * A policy thread (policy-threads.ts): a Cedar engine of its own, over the policy texts the API read and
 * sent. Messages are handled in order, so the evaluations sent before a reload finish on the old set.
 */
let policies = (workerData as { policies: Record<string, string> }).policies;
const engine = createPolicyEngineFrom(() => policies);
const port = parentPort;
if (!port) throw new Error('policy-thread.js runs as a worker thread');

port.on('message', (message: ThreadRequest) => {
  if (message.kind === 'reload') {
    policies = message.policies;
    try {
      engine.reload();
    } catch (error) {
      port.postMessage({ id: message.id, error: (error as Error).message } satisfies ThreadReply);
      return;
    }
  }
  port.postMessage(answer(engine, message));
});
port.postMessage({ id: 0, policyCount: engine.policyCount } satisfies ThreadReply);
