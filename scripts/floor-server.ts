import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { Redis } from 'ioredis';
import { generateKeyPair, SignJWT } from 'jose';

/**
 * The irreducible floor the benchmark compares the broker with (docs/benchmark.md): a bare node:http server
 * that, per request, signs one ES256 JWT and writes one lease record to Redis in one MULTI round trip —
 * nothing else (no identity check, no policy, no schedule, no audit). Token claims and lease fields are
 * shaped like the broker's so that signing and Redis cost the same.
 *
 * Env: PORT, REDIS_URL, FLOOR_PREFIX (default `floor:`). GET /healthz answers once Redis does.
 */
async function main() {
  const port = Number(process.env.PORT ?? 0);
  const prefix = process.env.FLOOR_PREFIX ?? 'floor:';
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { connectionName: 'floor' });
  await redis.ping();
  const { privateKey } = await generateKeyPair('ES256');
  const ttlSeconds = 3600;

  const server = createServer((req, res) => {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    req.resume();
    req.on('end', async () => {
      try {
        const nowMs = Date.now();
        const id = randomUUID().replaceAll('-', '');
        const expiresAtMs = nowMs + ttlSeconds * 1000;
        const token = await new SignJWT({ task: 'floor-task', scope: 'bench:read', iss_name: 'bench' })
          .setProtectedHeader({ alg: 'ES256', kid: 'floor-key', typ: 'at+jwt' })
          .setIssuer('tasklease-floor')
          .setSubject('bench-agent')
          .setAudience('https://bench.test')
          .setJti(id)
          .setIssuedAt(Math.floor(nowMs / 1000))
          .setExpirationTime(Math.floor(expiresAtMs / 1000))
          .sign(privateKey);
        await redis
          .multi()
          .hset(`${prefix}lease:${id}`, {
            id,
            taskId: 'floor-task',
            grant: 'bench-read',
            provider: 'jwt',
            issuer: 'bench',
            subject: 'bench-agent',
            state: 'active',
            createdAtMs: nowMs,
            expiresAtMs,
            handle: JSON.stringify({ jti: id }),
            attempts: 0,
          })
          .zadd(`${prefix}leases:due`, expiresAtMs, id)
          .exec();
        const body = JSON.stringify({
          leaseId: id,
          expiresAt: new Date(expiresAtMs).toISOString(),
          credential: { token },
        });
        res.writeHead(201, { 'content-type': 'application/json' }).end(body);
      } catch (error) {
        res
          .writeHead(500, { 'content-type': 'application/json' })
          .end(JSON.stringify({ error: (error as Error).message }));
      }
    });
  });
  server.keepAliveTimeout = 65_000;
  server.listen(port, '127.0.0.1');
  const stop = () => {
    server.closeAllConnections();
    server.close();
    redis.disconnect();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error: Error) => {
  process.stderr.write(`floor server: ${error.message}\n`);
  process.exit(1);
});
