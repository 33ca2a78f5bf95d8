import { Agent, request } from 'node:http';

/**
 * The load generator: keep-alive node:http, no dependencies. The same code drives the broker and the floor
 * server, so whatever it costs on the shared cores it costs both equally.
 */

export interface Target {
  port: number;
  /** One request to send: path, headers (Authorization, Content-Type, Content-Length) and body. */
  next(): { path: string; headers: Record<string, string>; body: Buffer };
}

export interface Reply {
  status: number;
  body: Buffer;
}

export function keepAliveAgent(maxSockets: number): Agent {
  return new Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, keepAliveMsecs: 30_000 });
}

export function send(
  agent: Agent,
  port: number,
  one: ReturnType<Target['next']>,
  method = 'POST',
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      { agent, host: '127.0.0.1', port, method, path: one.path, headers: one.headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(one.body);
  });
}

export const jsonRequest = (path: string, token: string, value: unknown): ReturnType<Target['next']> => {
  const body = Buffer.from(JSON.stringify(value));
  return {
    path,
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      'content-length': String(body.length),
    },
    body,
  };
};

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
}

export function summarise(values: readonly number[]): LatencySummary {
  if (values.length === 0) return { count: 0, p50Ms: NaN, p90Ms: NaN, p99Ms: NaN, maxMs: NaN, meanMs: NaN };
  const sorted = Float64Array.from(values).sort();
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;
  const sum = sorted.reduce((total, value) => total + value, 0);
  const round = (value: number) => Math.round(value * 100) / 100;
  return {
    count: sorted.length,
    p50Ms: round(at(0.5)),
    p90Ms: round(at(0.9)),
    p99Ms: round(at(0.99)),
    maxMs: round(sorted[sorted.length - 1] as number),
    meanMs: round(sum / sorted.length),
  };
}

export interface PhaseResult {
  mode: 'closed' | 'open';
  connections?: number;
  targetRatePerSecond?: number;
  measuredSeconds: number;
  /** Every request sent in the phase, warm-up included (to divide the server's CPU time by). */
  requests: number;
  completed: number;
  throughputPerSecond: number;
  errors: number;
  statuses: Record<string, number>;
  latency: LatencySummary;
}

class Recorder {
  readonly latencies: number[] = [];
  readonly statuses: Record<string, number> = {};
  errors = 0;
  /** Successful replies that arrived inside the measured window, whenever they were sent. */
  completedInWindow = 0;

  record(status: number | 'error', latencyMs: number) {
    this.statuses[status] = (this.statuses[status] ?? 0) + 1;
    if (status !== 201) this.errors += 1;
    else this.latencies.push(latencyMs);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Closed loop: `connections` clients, each sending its next request when the last one answers. Requests
 * started during the warm-up are not recorded; throughput counts completions inside the measured window.
 */
export async function closedLoop(
  target: Target,
  options: { connections: number; warmupMs: number; durationMs: number },
): Promise<PhaseResult> {
  const agent = keepAliveAgent(options.connections);
  const recorder = new Recorder();
  const startMs = performance.now();
  const measureFromMs = startMs + options.warmupMs;
  const endMs = measureFromMs + options.durationMs;
  let requests = 0;
  const client = async () => {
    while (performance.now() < endMs) {
      requests += 1;
      const sentMs = performance.now();
      let status: number | 'error';
      try {
        status = (await send(agent, target.port, target.next())).status;
      } catch {
        status = 'error';
        await sleep(10);
      }
      const doneMs = performance.now();
      if (doneMs < measureFromMs || doneMs > endMs) continue;
      if (status === 201) recorder.completedInWindow += 1;
      if (sentMs >= measureFromMs) recorder.record(status, doneMs - sentMs);
    }
  };
  await Promise.all(Array.from({ length: options.connections }, client));
  agent.destroy();
  const completed = recorder.completedInWindow;
  return {
    mode: 'closed',
    connections: options.connections,
    measuredSeconds: options.durationMs / 1000,
    requests,
    completed,
    throughputPerSecond: Math.round(completed / (options.durationMs / 1000)),
    errors: recorder.errors,
    statuses: recorder.statuses,
    latency: summarise(recorder.latencies),
  };
}

/**
 * Open loop at a fixed rate: request i is due at start + i/rate and its latency runs from that intended
 * time, not from when it actually left, so a stalled server cannot hide its backlog (coordinated omission).
 */
export async function openLoop(
  target: Target,
  options: { ratePerSecond: number; warmupMs: number; durationMs: number; maxSockets?: number },
): Promise<PhaseResult> {
  const agent = keepAliveAgent(options.maxSockets ?? 512);
  const recorder = new Recorder();
  const intervalMs = 1000 / options.ratePerSecond;
  const startMs = performance.now() + 5;
  const measureFromMs = startMs + options.warmupMs;
  const measureEndMs = measureFromMs + options.durationMs;
  const total = Math.floor(((options.warmupMs + options.durationMs) / 1000) * options.ratePerSecond);
  const inflight = new Set<Promise<void>>();
  let sent = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (sent < total && startMs + sent * intervalMs <= now) {
        const intendedMs = startMs + sent * intervalMs;
        sent += 1;
        const one = send(agent, target.port, target.next()).then(
          (reply) => reply.status,
          () => 'error' as const,
        );
        const done: Promise<void> = one.then((status) => {
          const doneMs = performance.now();
          if (intendedMs >= measureFromMs) recorder.record(status, doneMs - intendedMs);
          if (status === 201 && doneMs >= measureFromMs && doneMs <= measureEndMs)
            recorder.completedInWindow += 1;
          inflight.delete(done);
        });
        inflight.add(done);
      }
      if (sent < total) setTimeout(tick, Math.max(0, Math.min(1, startMs + sent * intervalMs - now)));
      else resolve();
    };
    tick();
  });
  await Promise.all(inflight);
  agent.destroy();
  // Replies that arrived inside the measured window: below the target rate means the server fell behind.
  const completed = recorder.completedInWindow;
  return {
    mode: 'open',
    targetRatePerSecond: options.ratePerSecond,
    measuredSeconds: options.durationMs / 1000,
    requests: total,
    completed,
    throughputPerSecond: Math.round(completed / (options.durationMs / 1000)),
    errors: recorder.errors,
    statuses: recorder.statuses,
    latency: summarise(recorder.latencies),
  };
}

/**
 * Sends exactly `count` requests over `connections` keep-alive connections as fast as they are answered and
 * returns every reply (used to create leases whose ids the bench needs afterwards).
 */
export async function sendMany(
  target: Pick<Target, 'port'>,
  count: number,
  connections: number,
  make: (index: number) => ReturnType<Target['next']>,
): Promise<Reply[]> {
  const agent = keepAliveAgent(connections);
  const replies: Reply[] = new Array(count);
  let nextIndex = 0;
  const client = async () => {
    while (nextIndex < count) {
      const index = nextIndex++;
      replies[index] = await send(agent, target.port, make(index)).catch(() => ({
        status: 0,
        body: Buffer.alloc(0),
      }));
    }
  };
  await Promise.all(Array.from({ length: connections }, client));
  agent.destroy();
  return replies;
}
