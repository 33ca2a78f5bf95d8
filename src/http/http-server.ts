import { createServer, type RequestListener, type Server } from 'node:http';
import type { Config } from '../config/schema';

export type HttpLimits = Config['http'];

/**
 * How often Node looks for requests past `headersTimeout` or `requestTimeout` (its default, 30 s, would let
 * a slow client hold a socket up to 30 s past either deadline): a quarter of the shorter one, within
 * 50 ms … 1 s. The check walks the open connections, which is cheap at that pace.
 */
export const checkingIntervalMs = (limits: HttpLimits): number =>
  Math.min(1000, Math.max(50, Math.floor(Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) / 4)));

/**
 * The API's HTTP server, with every deadline a client could otherwise stretch (docs/architecture.md,
 * "Timeouts and limits"): the headers within `headersTimeoutMs` of the connection (or of the previous
 * response), the whole request with its body within `requestTimeoutMs` (Node answers 408 and closes), an
 * idle keep-alive connection closed after `keepAliveTimeoutMs`, and at most `maxConnections` open at once;
 * a connection beyond that is closed at once (`onDrop`), so slow or idle clients cannot starve the rest.
 * Responses are not bounded here: a long-poll may answer late by design (approvals, up to 55 s).
 */
export function createHttpServer(listener: RequestListener, limits: HttpLimits, onDrop: () => void): Server {
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      connectionsCheckingInterval: checkingIntervalMs(limits),
    },
    listener,
  );
  server.maxConnections = limits.maxConnections;
  server.on('drop', onDrop);
  return server;
}
