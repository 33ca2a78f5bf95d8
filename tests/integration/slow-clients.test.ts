import { connect, type Socket } from 'node:net';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';

/**
 * Slow and idle clients against the real API server, over raw sockets: each deadline (headers, whole request,
 * idle keep-alive) ends the connection, and the connection cap refuses extra connections while the API goes on
 * serving once they are gone. The configured deadlines are short; each is asserted with a margin of seconds,
 * robust on a loaded machine, and well short of the minutes a dribbling client held a socket before.
 */
const HEADERS_TIMEOUT_MS = 600;
const REQUEST_TIMEOUT_MS = 1200;
const KEEP_ALIVE_TIMEOUT_MS = 500;
/** Node keeps a keep-alive socket `keepAliveTimeoutBuffer` (1 s) longer than it advertises. */
const NODE_KEEP_ALIVE_BUFFER_MS = 1000;
const MARGIN_MS = 4000;

interface HeldSocket {
  socket: Socket;
  /** Resolves when the server closed the connection: what it sent, and how long after the start. */
  closed: Promise<{ received: string; afterMs: number }>;
}

async function open(port: number): Promise<HeldSocket> {
  const socket = connect({ port, host: '127.0.0.1' });
  const startedMs = performance.now();
  let received = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (received += chunk));
  // The server's closing may reset the socket while a byte is in flight: that is a close too.
  socket.on('error', () => undefined);
  const closed = new Promise<{ received: string; afterMs: number }>((resolve) =>
    socket.on('close', () => resolve({ received, afterMs: performance.now() - startedMs })),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, closed };
}

/** Writes `text` a byte every `everyMs` until the socket closes (or the text runs out). */
function dribble(socket: Socket, text: string, everyMs: number): void {
  let at = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || at >= text.length) return clearInterval(timer);
    socket.write(text[at++] as string);
  }, everyMs);
  socket.on('close', () => clearInterval(timer));
}

const portOf = (broker: TestBroker) => Number(new URL(broker.url).port);

describe('slow clients', () => {
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await startTestBroker({
      http: {
        headersTimeoutMs: HEADERS_TIMEOUT_MS,
        requestTimeoutMs: REQUEST_TIMEOUT_MS,
        keepAliveTimeoutMs: KEEP_ALIVE_TIMEOUT_MS,
      },
    });
  });
  afterAll(async () => {
    await broker?.close();
  });

  it('a client dribbling its body is answered 408 and cut off by the request deadline; nothing is declared', async () => {
    const agent = await broker.agents.sign({ sub: 'dribbling-agent' });
    const body = JSON.stringify({ purpose: 'x'.repeat(400), ticket: 'OPS-9' });
    const { socket, closed } = await open(portOf(broker));
    socket.write(
      `POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${agent}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
    );
    dribble(socket, body, 50);
    // Meanwhile the API serves everyone else.
    const other = await broker.agents.sign({ sub: 'prompt-agent' });
    expect(
      (await broker.call('POST', '/v1/tasks', other, { purpose: 'on time', ticket: 'OPS-9' })).status,
    ).toBe(201);

    const { received, afterMs } = await closed;
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    expect(afterMs).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS * 0.9);
    expect(afterMs).toBeLessThan(REQUEST_TIMEOUT_MS + MARGIN_MS);
    const openTasks = broker.context.keys.identityOpenTasks('agents/dribbling-agent');
    expect(await broker.context.redis.zcard(openTasks)).toBe(0);
  });

  it('a client sending its headers slowly is answered 408 and cut off by the headers deadline', async () => {
    const { socket, closed } = await open(portOf(broker));
    dribble(socket, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${'a'.repeat(200)}\r\n\r\n`, 50);
    const { received, afterMs } = await closed;
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    expect(afterMs).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS * 0.9);
    expect(afterMs).toBeLessThan(HEADERS_TIMEOUT_MS + MARGIN_MS);
  });

  it('a connection that never sends a byte is closed by the headers deadline', async () => {
    const { closed } = await open(portOf(broker));
    const { afterMs } = await closed;
    expect(afterMs).toBeLessThan(HEADERS_TIMEOUT_MS + MARGIN_MS);
  });

  it('an idle keep-alive connection is closed after its answer, once the keep-alive timeout has passed', async () => {
    const { socket, closed } = await open(portOf(broker));
    socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n');
    const { received, afterMs } = await closed;
    expect(received).toMatch(/^HTTP\/1\.1 200 /);
    expect(received).toMatch(/\r\nKeep-Alive: timeout=0\b/i);
    expect(afterMs).toBeLessThan(KEEP_ALIVE_TIMEOUT_MS + NODE_KEEP_ALIVE_BUFFER_MS + MARGIN_MS);
  });
});

describe('the connection cap', () => {
  const CAP = 5;
  let broker: TestBroker;
  beforeAll(async () => {
    // Long deadlines: the held connections stay until the test lets them go.
    broker = await startTestBroker({ http: { maxConnections: CAP, keepAliveTimeoutMs: 100 } });
  });
  afterAll(async () => {
    await broker?.close();
  });

  const connections = () =>
    new Promise<number>((resolve, reject) =>
      broker.api.server.getConnections((error, count) => (error ? reject(error) : resolve(count))),
    );
  const dropsCounted = async () => {
    const text = await (await fetch(`${broker.url}/metrics`)).text();
    return Number(/^tasklease_http_connections_dropped_total (\d+)$/m.exec(text)?.[1] ?? 0);
  };

  it('refuses connections beyond the cap, counted, and serves normally once they are gone', async () => {
    const droppedBefore = await dropsCounted();
    await waitFor(async () => (await connections()) === 0, 5000);
    const held = await Promise.all(Array.from({ length: CAP }, () => open(portOf(broker))));
    await waitFor(async () => (await connections()) === CAP, 5000);

    // One more: accepted by the kernel, closed by the server at once without a byte.
    const extra = await open(portOf(broker));
    extra.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    expect((await extra.closed).received).toBe('');
    await expect(fetch(`${broker.url}/healthz`)).rejects.toThrow();

    for (const { socket } of held) socket.destroy();
    await waitFor(async () => (await connections()) === 0, 5000);
    const agent = await broker.agents.sign({ sub: 'after-the-crowd' });
    expect(
      (await broker.call('POST', '/v1/tasks', agent, { purpose: 'served again', ticket: 'OPS-9' })).status,
    ).toBe(201);
    expect(await dropsCounted()).toBe(droppedBefore + 2);
  });
});
