import type { Express, RequestHandler } from 'express';

/** One route of the app: method, full path pattern, and its handlers in order. */
export interface RouteEntry {
  method: string;
  path: string;
  handlers: RequestHandler[];
}

/** The parts of Express 5's router (the `router` package) that describe what is registered. */
interface LayerShape {
  route?: { path: string | string[]; stack: { method?: string; handle: RequestHandler }[] };
  handle: { stack?: LayerShape[] };
  slash?: boolean;
  rawPath?: unknown;
}

/**
 * Every route registered on `app`, with nested routers flattened. A router mounted under a path adds that
 * path; a mount path that is not a plain string cannot be read back, so it throws rather than misreport.
 */
export function listRoutes(app: Express): RouteEntry[] {
  const walk = (stack: LayerShape[], prefix: string): RouteEntry[] =>
    stack.flatMap((layer) => {
      if (layer.route) {
        const { path, stack: handlers } = layer.route;
        const methods = [...new Set(handlers.map((h) => h.method).filter((m): m is string => Boolean(m)))];
        return ([] as string[]).concat(path).flatMap((one) =>
          methods.map((method) => ({
            method: method.toUpperCase(),
            path: `${prefix}${one}`,
            handlers: handlers.map((h) => h.handle),
          })),
        );
      }
      if (!layer.handle.stack) return [];
      if (!layer.slash && typeof layer.rawPath !== 'string')
        throw new Error('listRoutes: a router is mounted under a path that is not a string');
      return walk(layer.handle.stack, layer.slash ? prefix : `${prefix}${layer.rawPath as string}`);
    });
  return walk((app.router as unknown as { stack: LayerShape[] }).stack, '');
}

/** `/v1/leases` is under `/v1/leases` and `/v1/leases/x/revoke`; `/v1/leasesx` is not. */
export const isUnder = (path: string, prefix: string): boolean =>
  path === prefix || path.startsWith(`${prefix}/`);
