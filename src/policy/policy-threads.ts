import { existsSync } from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { createPolicyEngineFrom, readPolicies, type PolicyDecision, type PolicyEngine } from './cedar-engine';
import { decideIssue, type IssueDecisionOptions, type IssueOutcome } from './issue-decision';
import type { PolicyRequest } from './vocabulary';

export type ThreadRequest =
  | { kind: 'evaluate'; id: number; request: PolicyRequest }
  | { kind: 'decideIssue'; id: number; request: PolicyRequest; options: IssueDecisionOptions }
  | { kind: 'reload'; id: number; policies: Record<string, string> };
export type ThreadReply =
  | { id: number; decision: PolicyDecision }
  | { id: number; outcome: IssueOutcome }
  | { id: number; policyCount: number }
  | { id: number; error: string };

/** What one message asks of an engine: the policy thread's and the API's own answer the same way. */
export function answer(engine: PolicyEngine, message: ThreadRequest): ThreadReply {
  try {
    switch (message.kind) {
      case 'evaluate':
        return { id: message.id, decision: engine.evaluate(message.request) };
      case 'decideIssue':
        return { id: message.id, outcome: decideIssue(engine, message.request, message.options) };
      case 'reload':
        return { id: message.id, policyCount: engine.policyCount };
    }
  } catch (error) {
    return { id: message.id, error: (error as Error).message };
  }
}

/** Fails closed, as an evaluation failure does: a denial with the error as the reason. */
const failedClosed = (reply: ThreadReply): PolicyDecision => ({
  allowed: false,
  policyIds: [],
  reason: `policy evaluation failed: ${'error' in reply ? reply.error : 'no decision'}`,
});

/** The policies as the API uses them: each decision made afresh, on a policy thread when there is one. */
export interface Policy extends Omit<PolicyEngine, 'evaluate' | 'reload'> {
  evaluate(request: PolicyRequest): Promise<PolicyDecision>;
  /** decideIssue (issue-decision.ts) on one thread, so every evaluation it makes sees the same policy set. */
  decideIssue(request: PolicyRequest, options: IssueDecisionOptions): Promise<IssueOutcome>;
  /** Re-reads the policies; on error those in force stay in force, on every thread, and the error is thrown. */
  reload(): Promise<{ policyCount: number }>;
  close(): Promise<void>;
}

// Under ts-jest this module runs from src/, where the thread exists only as TypeScript: it runs the build's.
const BUILT = path.join(__dirname, 'policy-thread.js');
const THREAD_FILE = existsSync(BUILT) ? BUILT : path.resolve(__dirname, '../../dist/policy/policy-thread.js');

interface Thread {
  worker: Worker;
  /** Being ended (hung, or could not load a reload): sent nothing more; what it holds is decided here. */
  retiring: boolean;
  /** In the order sent: the first is the oldest. */
  pending: Map<number, { request: ThreadRequest; sentAtMs: number; settle: (reply: ThreadReply) => void }>;
}

/** A thread that has not answered its oldest message for this long is taken for hung and replaced. */
const HUNG_MS = 5000;

/**
 * Cedar on `threads` worker threads, off the event loop: a decision costs the API's event loop the message
 * (~6–11 µs measured) instead of the evaluation (~45 µs alone, more among the request's other work). The
 * decision itself is unchanged: each request is evaluated, with its own context, by the same engine code.
 *
 * The API keeps an engine of its own over the same policy texts: it validates a reload before any thread
 * sees it, answers `readsContext`, and decides when no thread can (`threads: 0`, or a thread that died;
 * what that thread had in hand is decided there instead, so no request fails with it). A thread that has not
 * answered for 5 s is ended as hung. A dead thread is replaced, after 1 s, then 2, 4 … 30 s while
 * replacements keep dying.
 */
export function createPolicy(
  location: string,
  options: {
    threads: number;
    onThreadExit?: (error: Error) => void;
    /** The thread's script (tests give one that crashes on cue); by default policy-thread.js. */
    threadFile?: string;
  },
): Policy {
  let policies = readPolicies(location);
  const local = createPolicyEngineFrom(() => policies);
  const threads: (Thread | null)[] = Array.from({ length: options.threads }, () => null);
  let nextId = 1;
  let closed = false;
  let restartDelayMs = 1000;

  const start = (slot: number) => {
    const worker = new Worker(options.threadFile ?? THREAD_FILE, { workerData: { policies } });
    worker.unref();
    const thread: Thread = { worker, retiring: false, pending: new Map() };
    const startedMs = Date.now();
    worker.on('message', (reply: ThreadReply) => {
      const waiting = thread.pending.get(reply.id);
      thread.pending.delete(reply.id);
      waiting?.settle(reply);
    });
    const lost = (error: Error) => {
      if (threads[slot] !== thread) return;
      threads[slot] = null;
      // Evaluation has no side effects: what the thread had in hand is decided here instead.
      for (const { request, settle } of thread.pending.values()) settle(onLocal(request));
      thread.pending.clear();
      if (closed) return;
      options.onThreadExit?.(error);
      if (Date.now() - startedMs > 60_000) restartDelayMs = 1000;
      const delayMs = restartDelayMs;
      restartDelayMs = Math.min(30_000, restartDelayMs * 2);
      setTimeout(() => !closed && threads[slot] === null && start(slot), delayMs).unref();
    };
    worker.on('error', lost);
    worker.on('exit', (code) => lost(new Error(`policy thread exited with code ${code}`)));
    threads[slot] = thread;
  };

  const onLocal = (request: ThreadRequest): ThreadReply => answer(local, request);

  /** Ends a thread: its exit hands what it holds to the event loop and starts its replacement. */
  const retire = (thread: Thread) => {
    thread.retiring = true;
    void thread.worker.terminate();
  };

  const send = (thread: Thread, request: ThreadRequest) =>
    new Promise<ThreadReply>((settle) => {
      thread.pending.set(request.id, { request, sentAtMs: Date.now(), settle });
      thread.worker.postMessage(request);
    });

  /** The live thread with the least in hand, or null. */
  const leastBusy = () => {
    let best: Thread | null = null;
    for (const thread of threads)
      if (thread && !thread.retiring && (!best || thread.pending.size < best.pending.size)) best = thread;
    return best;
  };

  /** On the least busy live thread, or here when there is none. */
  const ask = (request: ThreadRequest): Promise<ThreadReply> => {
    const thread = leastBusy();
    return thread ? send(thread, request) : Promise.resolve(onLocal(request));
  };

  for (let slot = 0; slot < options.threads; slot++) start(slot);
  // Evaluations take microseconds: one unanswered for seconds means a hung thread. Ending it hands what it
  // held to the event loop (as a death does) and replaces it.
  const watchdog = setInterval(() => {
    for (const thread of threads) {
      const oldest = thread?.pending.values().next().value;
      if (thread && oldest && Date.now() - oldest.sentAtMs > HUNG_MS) retire(thread);
    }
  }, 1000);
  watchdog.unref();

  return {
    get policyCount() {
      return local.policyCount;
    },
    get workloadIds() {
      return local.workloadIds;
    },
    readsContext: (attribute) => local.readsContext(attribute),
    async evaluate(request) {
      const reply = await ask({ kind: 'evaluate', id: nextId++, request });
      if ('decision' in reply) return reply.decision;
      return failedClosed(reply);
    },
    async decideIssue(request, decisionOptions) {
      const reply = await ask({ kind: 'decideIssue', id: nextId++, request, options: decisionOptions });
      if ('outcome' in reply) return reply.outcome;
      return { kind: 'deny', decision: failedClosed(reply) };
    },
    async reload() {
      const previous = policies;
      try {
        policies = readPolicies(location);
        local.reload();
      } catch (error) {
        policies = previous;
        throw error;
      }
      const replies = await Promise.all(
        threads.map((thread) =>
          thread ? send(thread, { kind: 'reload', id: nextId++, policies }) : Promise.resolve(null),
        ),
      );
      // The texts parsed here; a thread that could not load them is replaced by one that starts on them.
      replies.forEach((reply, slot) => {
        const thread = threads[slot];
        if (thread && reply && 'error' in reply) retire(thread);
      });
      return { policyCount: local.policyCount };
    },
    async close() {
      closed = true;
      clearInterval(watchdog);
      await Promise.all(threads.map((thread) => thread?.worker.terminate()));
    },
  };
}
