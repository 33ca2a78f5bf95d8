import { jsonRequest, keepAliveAgent, send, type Target } from './load-generator';
import { BENCH_GRANT, type BrokerPair } from './processes';

/**
 * What a request looks like: a few workloads (identity tokens are reusable bearer proofs, so each is minted
 * once), each with a few long-lived tasks declared up front; issuance requests go round-robin over them.
 */
export interface Workload {
  /** Issuance requests against the broker, for leases of `ttlSeconds` (or a per-request TTL). */
  broker(ttlSeconds: number | (() => number)): Target;
  /** The same requests against the floor server (throws when `env` runs none). */
  floor(): Target;
  /**
   * Issuance requests each presenting an identity token never sent before (`count` are signed up front, then
   * each is used once): every request verifies its token, none is answered from the identity cache.
   */
  brokerFreshTokens(count: number): Promise<Target>;
}

interface OwnedTask {
  token: string;
  subject: string;
  taskId: string;
}

/** `grant`: the grant every task declares and every request asks for (default the bench's `bench-read`). */
export async function prepareWorkload(
  env: BrokerPair,
  options: { identities: number; tasksEach: number; grant?: string; subjectPrefix?: string },
): Promise<Workload> {
  const grant = options.grant ?? BENCH_GRANT;
  const agent = keepAliveAgent(4);
  const owned: OwnedTask[] = [];
  for (let i = 0; i < options.identities; i++) {
    const subject = `${options.subjectPrefix ?? 'bench-agent'}-${i}`;
    const token = await env.identityToken(subject);
    for (let j = 0; j < options.tasksEach; j++) {
      const body = {
        purpose: 'benchmark',
        ticket: `BENCH-${i}-${j}`,
        grants: [grant],
        ttlSeconds: 86_400,
      };
      const reply = await send(agent, env.api.port, jsonRequest('/v1/tasks', token, body));
      if (reply.status !== 201)
        throw new Error(`declaring a task failed: ${reply.status} ${reply.body.toString()}`);
      owned.push({
        token,
        subject,
        taskId: (JSON.parse(reply.body.toString()) as { taskId: string }).taskId,
      });
    }
  }
  agent.destroy();

  const roundRobin = () => {
    let next = 0;
    return () => owned[next++ % owned.length] as OwnedTask;
  };
  return {
    broker(ttlSeconds) {
      const pick = roundRobin();
      // Fixed TTL: the request bytes are built once per task and reused.
      const fixed =
        typeof ttlSeconds === 'number'
          ? owned.map((task) =>
              jsonRequest(`/v1/tasks/${task.taskId}/credentials`, task.token, { grant, ttlSeconds }),
            )
          : null;
      let index = 0;
      return {
        port: env.api.port,
        next: () => {
          if (fixed) return fixed[index++ % fixed.length] as ReturnType<Target['next']>;
          const task = pick();
          const ttl = (ttlSeconds as () => number)();
          return jsonRequest(`/v1/tasks/${task.taskId}/credentials`, task.token, { grant, ttlSeconds: ttl });
        },
      };
    },
    async brokerFreshTokens(count) {
      const subjects = [...new Set(owned.map((task) => task.subject))];
      const pools = new Map<string, string[]>();
      for (const subject of subjects) {
        const tokens: string[] = [];
        for (let i = 0; i < Math.ceil(count / subjects.length); i += 500)
          tokens.push(...(await Promise.all(Array.from({ length: 500 }, () => env.identityToken(subject)))));
        pools.set(subject, tokens);
      }
      const pick = roundRobin();
      const used = new Map<string, number>();
      return {
        port: env.api.port,
        next: () => {
          const task = pick();
          const pool = pools.get(task.subject) as string[];
          const index = used.get(task.subject) ?? 0;
          used.set(task.subject, index + 1);
          // Past the pool the tokens come round again (and hit the cache): the pool is sized to the phase.
          const token = pool[index % pool.length] as string;
          return jsonRequest(`/v1/tasks/${task.taskId}/credentials`, token, { grant, ttlSeconds: 3600 });
        },
      };
    },
    floor() {
      if (!env.floor) throw new Error('this environment runs no floor server');
      const first = owned[0] as OwnedTask;
      const one = jsonRequest(`/v1/tasks/${first.taskId}/credentials`, first.token, {
        grant,
        ttlSeconds: 3600,
      });
      return { port: env.floor.port, next: () => one };
    },
  };
}
